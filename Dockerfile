# The workbench on a CUDA GPU, installed exactly as the README says (`pip install -r requirements.txt`,
# then `python app.py`):
#
#   docker build -t wan-ui .
#   docker run --gpus all -p 127.0.0.1:7860:7860 -v wan-outputs:/app/outputs \
#       -v wan-hf:/home/wan/.cache/huggingface wan-ui
#
# The first start downloads Wan-AI/Wan2.1-T2V-1.3B-Diffusers (~17 GB) into the Hugging Face cache volume, with
# its progress in the page's header and the log; later starts reuse it. Without a GPU the app runs the tiny
# random-weight model. Extra flags go after the image name: `... wan-ui python app.py --listen --auth user:pass`
# (that is how to serve a network).
FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    GRADIO_SERVER_PORT=7860 \
    PATH=/opt/venv/bin:$PATH

# Ubuntu 24.04's python3 is 3.12, the version requirements.txt is pinned for. No ffmpeg package: imageio-ffmpeg's
# wheel ships its own binary. torch's wheel brings its CUDA 13 libraries; the base image gives the driver hooks.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /app

# The README's install step, unchanged (its own layer: code edits do not reinstall torch).
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# A non-root user owns only what the app writes: outputs, the HF cache, its settings (~/.config/wan_ui).
# The base image's "ubuntu" user holds uid 1000, the usual owner of bind-mounted host folders: take it over.
RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --create-home --uid 1000 --shell /bin/bash wan \
    && mkdir -p /app/outputs /home/wan/.cache/huggingface /home/wan/.config/wan_ui \
    && chown -R wan:wan /app/outputs /home/wan
USER 1000:1000
ENV HOME=/home/wan \
    HF_HOME=/home/wan/.cache/huggingface
VOLUME ["/app/outputs", "/home/wan/.cache/huggingface", "/home/wan/.config/wan_ui"]

EXPOSE 7860
# The page answers as soon as the server is up (the checkpoint downloads in the background). Another --port
# needs its own HEALTHCHECK.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:7860/', timeout=8)"]

# --listen: the published port reaches the app only on 0.0.0.0 inside the container. The app refuses it without
# --auth unless told --no-auth-i-know; the image has no password to give, so it says that, and `docker run -p`
# decides who reaches the port (127.0.0.1:7860:7860 above: this machine only). README.md, "Deployment".
CMD ["python", "app.py", "--listen", "--no-auth-i-know"]
