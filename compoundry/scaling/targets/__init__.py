"""Where replicas of a deployment run: local processes, Kubernetes/Knative, BentoCloud; one protocol."""
