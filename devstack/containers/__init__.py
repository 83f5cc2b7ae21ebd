"""Containers under podman: the Lambda base image and model images, AWS's runtime interface
emulator, and the Lambda containers devstack runs."""
