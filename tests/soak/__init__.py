"""The soak: a long life of rainbowd compressed into minutes against the real control plane and
Prometheus (short cycles, streams cut, etcd compacted, churn, leader kills), every action judged
by the fault suite's witness, and the daemon's figures sampled throughout.
"""
