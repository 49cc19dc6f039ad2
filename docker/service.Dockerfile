# The image of `hsg serve` (docker/compose.yaml builds it): hsg and torch, no models inside;
# models, SAEs and the service config are mounted. TORCH_INDEX picks the torch build
# (CUDA 12.4 by default; https://download.pytorch.org/whl/cpu for a CPU-only image).
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu124
WORKDIR /opt/hsg
RUN pip install --no-cache-dir torch --index-url "$TORCH_INDEX"
COPY pyproject.toml README.md ./
COPY hsg ./hsg
RUN pip install --no-cache-dir .
WORKDIR /state
EXPOSE 8765
ENTRYPOINT ["hsg", "serve"]
