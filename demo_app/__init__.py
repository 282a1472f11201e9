"""The seed's demo color app: an HTTP page in its color and a TCP color stream, with a connections gauge."""
