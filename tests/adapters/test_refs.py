"""References: `name`, `name@N`, `name:alias`, and every way to get one wrong."""

import pytest

from loraplex.adapters import AdapterRef, InvalidReference
from loraplex.adapters.refs import check_name


@pytest.mark.parametrize(
    ("text", "name", "version", "alias"),
    [
        ("chat", "chat", None, None),
        ("chat@3", "chat", 3, None),
        ("chat@12", "chat", 12, None),
        ("chat:prod", "chat", None, "prod"),
        ("chat:latest", "chat", None, "latest"),
        ("my-adapter_v1.2", "my-adapter_v1.2", None, None),
        ("3d-model", "3d-model", None, None),
        ("a", "a", None, None),
        ("x" * 63, "x" * 63, None, None),
    ],
)
def test_parse_accepts_valid_references(text, name, version, alias):
    ref = AdapterRef.parse(text)
    assert (ref.name, ref.version, ref.alias) == (name, version, alias)
    assert str(ref) == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("team/chat", "it has a slash"),
        ("team\\chat", "it has a slash"),
        ("a..b", "it has '..'"),
        ("my chat", "it has white space"),
        ("chat\t", "it has white space"),
        ("Chat", "it has upper-case letters"),
        ("", "adapter name is empty"),
        ("x" * 64, "it is 64 characters long (at most 63)"),
        ("-chat", "it must start with a letter or digit"),
        (".hidden", "it must start with a letter or digit"),
        ("chat$", "it may hold only a-z, 0-9, '.', '_' and '-'"),
        ("a@0", "the version after '@' must be a positive number"),
        ("a@x", "the version after '@' must be a positive number"),
        ("a@", "the version after '@' must be a positive number"),
        ("a@-1", "the version after '@' must be a positive number"),
        ("a@1.5", "the version after '@' must be a positive number"),
        ("a@²", "the version after '@' must be a positive number"),
        ("@3", "adapter name is empty"),
        ("chat:", "alias is empty"),
        ("chat:Prod", "invalid alias 'Prod': it has upper-case letters"),
        ("chat:prod:x", "invalid alias 'prod:x'"),
    ],
)
def test_parse_refuses_invalid_references_saying_why(text, reason):
    with pytest.raises(InvalidReference) as excinfo:
        AdapterRef.parse(text)
    assert reason in str(excinfo.value)


def test_parse_refuses_non_strings():
    with pytest.raises(InvalidReference, match="invalid adapter reference"):
        AdapterRef.parse(3)  # type: ignore[arg-type]


def test_check_name_names_what_it_checks():
    assert check_name("prod", "alias") == "prod"
    with pytest.raises(InvalidReference, match="invalid alias 'a/b': it has a slash"):
        check_name("a/b", "alias")


def test_references_are_values():
    assert AdapterRef.parse("chat@2") == AdapterRef("chat", version=2)
    assert len({AdapterRef.parse("chat"), AdapterRef("chat")}) == 1


def test_the_name_ft_is_reserved_for_fine_tuned_model_ids():
    with pytest.raises(InvalidReference, match="'ft' is reserved"):
        AdapterRef.parse("ft:prod")
    with pytest.raises(InvalidReference, match="reserved"):
        check_name("ft")
    assert check_name("ft", "alias") == "ft"  # an alias `ft` is harmless: `name:ft`
    assert AdapterRef.parse("ftjob-000661a7793aa9e4c20a2f95@2").version == 2
