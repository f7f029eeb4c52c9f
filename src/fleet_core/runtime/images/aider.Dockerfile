# aider, in its own virtualenv from PyPI.
ARG BASE=fleet-base:bookworm
FROM ${BASE}
USER root
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/aider && /opt/aider/bin/pip install --no-cache-dir aider-chat \
 && ln -s /opt/aider/bin/aider /usr/local/bin/aider
RUN useradd --uid 1000 --create-home --home-dir /home/agent --shell /bin/sh agent
ENV HOME=/home/agent
USER 1000:1000
WORKDIR /work
