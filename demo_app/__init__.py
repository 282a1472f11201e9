"""The seed's demo color app: an HTTP page in its color and a TCP stream printing it, with a
Prometheus gauge of the connections it holds. `python -m demo_app --color 3c3fdc`; see README.md.
"""
