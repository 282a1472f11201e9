# rainbowd's image; the same image runs the demo app (`python -m demo_app`).
# BASE is any image with Python >= 3.11 and pip; `make image` builds on a Debian base of its own,
# made without a registry (rainbowd_sandbox.images).
ARG BASE=python:3.11-slim
FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /src
COPY pyproject.toml README.md ./
# The runtime only: the sandbox (sandbox/, rainbowd-sandbox) stays out (.dockerignore).
COPY rainbowd ./rainbowd
COPY demo_app ./demo_app
RUN pip install --no-cache-dir . && rm -rf /src
WORKDIR /
# A non-root user with no home: rainbowd writes nothing to disk.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["rainbowd"]
CMD ["run"]
