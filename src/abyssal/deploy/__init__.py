"""Hybrid deployment (``abyssal deploy``): edge, private and public tiers of the serving layer
behind a router that applies data-sensitivity, latency and overflow policies; an autoscaler and
its simulator; container images and Kubernetes manifests; a local mode that runs the whole
topology as processes on one machine."""
