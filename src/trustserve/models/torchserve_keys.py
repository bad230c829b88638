"""TorchServe ``config.properties`` keys that mean nothing in trustserve, and why.

``torchserve_config.translate`` reports each key it finds here with its reason;
docs/migrating-from-torchserve.md has the same table (a test compares them).
"""

# top-level keys (a key in none of these tables, nor translated, is not one we know)
IGNORED = {
    "number_of_netty_threads": "the frontend is asyncio: there is no thread pool to size",
    "netty_client_threads": "the frontend is asyncio: there is no thread pool to size",
    "async_logging": "trustserve logs through Python's logging, already off the request path",
    "vmargs": "there is no JVM",
    "keystore": "TLS takes PEM files: export the keystore with openssl pkcs12 and set "
    "tls.cert / tls.key",
    "keystore_pass": "TLS takes PEM files (tls.cert / tls.key), read without a password",
    "keystore_type": "TLS takes PEM files (tls.cert / tls.key)",
    "max_response_size": "answers are limited by the model's output shape, not a byte count",
    "grpc_management_port": "there is no gRPC management API: manage over HTTPS "
    "(listen.management_port)",
    "enable_grpc_ssl": "gRPC always uses the same TLS as HTTPS (unless tls.insecure_http)",
    "metrics_mode": "Prometheus /metrics is always served on listen.metrics_port",
    "metrics_config": "Prometheus /metrics is always served on listen.metrics_port",
    "metrics_format": "Prometheus /metrics is always served on listen.metrics_port",
    "enable_metrics_api": "Prometheus /metrics is always served on listen.metrics_port",
    "disable_system_metrics": "no system metrics are collected",
    "system_metrics_cmd": "no system metrics are collected",
    "cors_allowed_origin": "no CORS: the API is for programs, not for other sites' pages",
    "cors_allowed_methods": "no CORS: the API is for programs, not for other sites' pages",
    "cors_allowed_headers": "no CORS: the API is for programs, not for other sites' pages",
    "disable_token_authorization": "the management API always needs its bearer token "
    "(HOME/management.token); inference needs none",
    "enable_token_authorization": "the management API always needs its bearer token "
    "(HOME/management.token); inference needs none",
    "enable_model_api": "the management API registers archives from the model store only, "
    "always on",
    "allowed_urls": "archives are never downloaded: they come only from the model store",
    "install_py_dep_per_model": "no handler code runs in a worker, so there is nothing to install",
    "default_service_handler": "handlers do not run: the stock image_classifier's "
    "behaviour is built in",
    "service_envelope": "handlers do not run: requests are Open Inference Protocol v2 or "
    "TorchServe's /predictions",
    "number_of_gpu": "the engines run on CPU (onnxruntime, openvino)",
    "decode_input_request": "inputs are decoded by their content type",
    "limit_max_image_pixels": "images are always limited to a fixed pixel count",
    "enable_envvars_config": "TRUSTSERVE_* environment variables always apply",
    "blacklist_env_vars": "workers get no user environment to filter",
    "workflow_store": "workflows are not supported",
    "model_snapshot": "no snapshots: the model store and trustserve.yaml are the state",
    "snapshot_store": "no snapshots: the model store and trustserve.yaml are the state",
    "initial_worker_port": "workers reach the frontend through the broker, not ports",
    "plugins_path": "there are no Java plugins",
    "unregister_model_timeout": "unregistering drains queued requests for up to 30 s",
    "max_workers": "no autoscaling: a model runs worker.per_model workers (the management "
    "API's PUT /models/{m}?min_worker=N scales one)",
    "use_env_allowed_urls": "archives are never downloaded",
    "preload_model": "each worker loads its model once, when it starts",
    "cpu_launcher_enable": "one single-threaded worker per core is the default "
    "(worker.threads, worker.per_model)",
    "cpu_launcher_args": "one single-threaded worker per core is the default "
    "(worker.threads, worker.per_model)",
    "ipex_enable": "the engines are onnxruntime and openvino",
    "use_native_io": "workers take requests from the broker, not from TorchServe's sockets",
    "io_ratio": "workers take requests from the broker, not from TorchServe's sockets",
    "prefer_direct_buffer": "the frontend is asyncio: there are no netty buffers",
    "grpc_inference_address": "gRPC listens on listen.host, at listen.grpc_port",
    "grpc_management_address": "there is no gRPC management API: manage over HTTPS "
    "(listen.management_port)",
    "default_startup_timeout": "a worker's start is not timed out: /v2/health/ready says "
    "when the models serve",
    "model_server_home": "trustserve's state is in its home directory (--home, TRUSTSERVE_HOME)",
    "metric_time_interval": "metrics are counted as requests happen, not sampled",
    "model_metrics_auto_detect": "Prometheus /metrics is always served on listen.metrics_port",
    "token_expiration_min": "the management token does not expire: it is the file "
    "HOME/management.token",
    "ts_open_inference_protocol": "the Open Inference Protocol v2 is always served, over "
    "REST and gRPC",
    "ts_header_key_sequence_id": "no sequence batching: every request stands alone",
    "ts_header_key_sequence_start": "no sequence batching: every request stands alone",
    "ts_header_key_sequence_end": "no sequence batching: every request stands alone",
    "cpp_log_config": "there is no C++ backend",
    "initial_distribution_port": "no distributed (torchrun) workers",
    "torchelastic_ts": "no distributed (torchrun) workers",
    "ipex_gpu_enable": "the engines are onnxruntime and openvino",
}

# per-version keys of the ``models=`` JSON that have no meaning here
MODEL_IGNORED = {
    "maxWorkers": "no autoscaling: a model runs worker.per_model workers",
    "responseTimeout": "one deadline for every model: limits.timeout_s (from "
    "default_response_timeout)",
    "jobQueueSize": "one queue limit for every model: limits.max_queue (from job_queue_size)",
}
