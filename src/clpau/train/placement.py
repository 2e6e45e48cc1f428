"""Where a batch's work runs: the views' crop, colour jitter and a store's JPEG decoding in the loader (a CPU
trainer) or on the trainer's device (a GPU), from the `*_on` params."""

from __future__ import annotations


def colour_on_host(colour_on: str, device_type: str, crop_on: str = "loader") -> bool:
    """Whether the loader applies the views' colour jitter (`colour_on`; auto: on a CPU, where the trainer's batched
    pass costs what it saves the loader) rather than the trainer's device; never where the crop is the trainer's."""
    if not crop_on_host(crop_on, device_type):
        return False
    return colour_on == "loader" or (colour_on == "auto" and device_type == "cpu")


def decode_on_host(decode_on: str, device_type: str, crop_on: str = "loader") -> bool:
    """Whether the loader decodes a clip store's JPEG frames (`decode_on`; auto: unless the trainer is a CUDA device
    with torchvision's nvjpeg decoder) rather than the trainer's device; never where the crop is the loader's."""
    if crop_on_host(crop_on, device_type):
        return True
    if decode_on == "auto":
        from clpau.data.jpeg_store import gpu_jpeg_decoder

        return not (device_type == "cuda" and gpu_jpeg_decoder() is not None)
    return decode_on == "loader"


def crop_on_host(crop_on: str, device_type: str) -> bool:
    """Whether the loader crops and resizes the views (`crop_on`; auto: on a CPU) rather than the trainer's device."""
    return crop_on == "loader" or (crop_on == "auto" and device_type == "cpu")
