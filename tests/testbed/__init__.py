"""Real parts for tests and the demo: a loop-mounted filesystem, a throwaway MariaDB, moto.

Everything binds to loopback, lives under one scratch directory, and is torn down by PID.
"""
