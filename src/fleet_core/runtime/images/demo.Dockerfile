# The demo agent (fleet_core/demo_agent.py, standard library only) on the base image.
ARG BASE=fleet-base:bookworm
FROM ${BASE}
RUN useradd --uid 1000 --create-home --home-dir /home/agent --shell /bin/sh agent
COPY fleet_core /usr/lib/python3/dist-packages/fleet_core
ENV PYTHONUNBUFFERED=1 HOME=/home/agent
USER 1000:1000
WORKDIR /work
