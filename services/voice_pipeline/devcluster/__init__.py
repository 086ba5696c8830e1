"""A local one-node Kubernetes cluster whose Pods run (`voice-pipeline cluster up|down|status`).

For trying the Helm chart without a cloud and for the running-Pods test tier: the control plane,
kubelet and kube-proxy as local processes on the local Docker engine (see cluster.py), with a
small DNS (dns.py). Nothing here is used by the pipeline itself.
"""
