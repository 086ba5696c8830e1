"""Kubernetes operator for VoicePipeline resources."""
