"""The local control API: HTTP/1.1 + JSON over a Unix socket, and its client."""
