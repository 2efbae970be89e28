# The offline base image: `invoke docker.base` (iwc.host.docker_base) builds it when no registry is reachable.
# FROM a minimal Debian made here with debootstrap (python3, venv, passwd), imported as ${DEBIAN};
# this adds a virtual environment holding torch + torchvision, installed with the machine's own pip
# configuration (its indexes, served on loopback when they are local folders; the build runs with
# --network host) and the machine's CA bundle, so pip here and in the project's image reaches the index.
ARG DEBIAN=iwc-debian:bookworm
FROM ${DEBIAN}

ARG TORCH=2.14.1
ARG TORCHVISION=0.29.1
# The machine's pip settings, rewritten for the build (unset when the machine has none)
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS

COPY ca-bundle.crt /usr/local/share/iwc/ca-bundle.crt
ENV PATH=/opt/venv/bin:$PATH \
    PIP_CERT=/usr/local/share/iwc/ca-bundle.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

RUN python3 -m venv /opt/venv \
    && pip install --no-cache-dir "torch==${TORCH}" "torchvision==${TORCHVISION}"
