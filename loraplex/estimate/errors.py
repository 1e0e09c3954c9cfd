"""The estimate's errors, with messages written for the user."""


class EstimateError(Exception):
    """The estimate cannot be made: unknown architecture, bad device, unreadable config."""
