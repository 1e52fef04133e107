"""This machine: process groups, liveness and ports, shared by the supervisor and the local target."""
