# NVIDIA's Triton Inference Server container serving a repository built by `whisper-triton build`.
# 24.10 is Triton 2.51, the release the repository's configs are generated and tested against.
#
#   whisper-triton build --runtime tensorrt --precision fp16 --output model_repository   # on a GPU machine
#   (or --runtime onnxruntime, or the default python runtime)
#   docker build -f docker/triton.Dockerfile -t whisper-triton:gpu .
#   docker run --gpus all --shm-size=1g -p 8000:8000 -p 8001:8001 -p 8002:8002 whisper-triton:gpu
#
# The models bring their own whisper_triton code; the image needs only the third-party packages listed
# in the repository's requirements.txt (numpy<2: this container's Python stub reads numpy 1 arrays).
# A TensorRT repository also needs TensorRT's Python bindings and torch for the decoding model.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_IMAGE}
ARG EXTRA_PACKAGES=""
COPY model_repository/requirements.txt /opt/whisper-triton/requirements.txt
RUN pip install --no-cache-dir -r /opt/whisper-triton/requirements.txt ${EXTRA_PACKAGES}
COPY model_repository /models
USER triton-server
EXPOSE 8000 8001 8002
# Admin APIs (model control, shared memory, logging, trace) only with the key $WHISPER_TRITON_ADMIN_KEY in
# the header whisper-triton-admin-key over HTTP, triton-grpc-protocol-whisper-triton-admin-key over gRPC
# (Triton prefixes gRPC's; docs/serving.md); without the variable, a random key: closed.
ENV WHISPER_TRITON_ADMIN_KEY=""
CMD ["bash", "-c", "key=${WHISPER_TRITON_ADMIN_KEY:-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \\n')}; restricted=model-repository,shared-memory,logging,trace:whisper-triton-admin-key=$key; exec tritonserver --model-repository=/models --http-restricted-api=$restricted --grpc-restricted-protocol=$restricted"]
