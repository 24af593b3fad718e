#!/usr/bin/python3
"""Writes the seed corpora of the libFuzzer targets into fuzz/seeds/<target>/.

The seeds are the shapes the test fixtures use, kept small (at most a few KB) so that
mutations stay cheap: ImageJ / OME-XML / tifffile descriptions, ImageJ, OME, tifffile,
BigTIFF, tiled, deflate-compressed and big-endian TIFFs (written by tifffile, as the interop tests
do), torch.save pickles (pickled here the way torch.save pickles, with persistent ids for
the storages), safetensors files and Zarr arrays (written by zarr-python with every
compressor, with NGFF 0.4/0.3 .zattrs). The prompt-file seeds are written by the prompt_file
fuzzer itself with the library's own writer (save_prompt), when it is built.
Run: /usr/bin/python3 fuzz/make_seeds.py [build-fuzz]   (needs python3-tifffile, numpy, python3-zarr)
"""
import collections
import json
import os
import pickle
import struct
import subprocess
import sys
import types

import numpy as np
import tifffile

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def put(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


# --- descriptions: 2 bytes page count - 1, 2 bytes contiguous capacity, then the text
def desc(name, n_pages, text, contiguous=0):
    put("tiff_description", name, struct.pack("<HH", n_pages - 1, contiguous) + text.encode())


OME = ('<?xml version="1.0"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
       '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="{order}" Type="uint16" SizeX="8" SizeY="8" '
       'SizeZ="{z}" SizeC="{c}" SizeT="{t}" PhysicalSizeX="0.1" PhysicalSizeY="0.1" PhysicalSizeZ="0.5" '
       'PhysicalSizeXUnit="nm" PhysicalSizeZUnit="\u00b5m">{tiffdata}</Pixels></Image></OME>')
desc("imagej_stack", 3, "ImageJ=1.53t\nimages=3\nslices=3\nunit=micron\nspacing=0.4\nloop=false\n")
desc("imagej_unicode_unit", 2, "ImageJ=1.53q\nimages=2\nslices=2\nunit=\\u00B5m\nspacing=0.1499999999996362\n")
desc("imagej_hyperstack", 6, "ImageJ=1.53t\nimages=6\nchannels=2\nslices=3\nhyperstack=true\nmode=composite\n")
desc("imagej_frames", 4, "ImageJ=1.11a\nimages=4\nslices=2\nframes=2\nhyperstack=true\n")
desc("imagej_channels_only", 5, "ImageJ=1.11a\nimages=5\nchannels=5\nhyperstack=true\nmode=grayscale")
desc("imagej_contiguous", 1, "ImageJ=1.54f\nimages=20\nslices=20\nunit=micron\nspacing=2.0\n", contiguous=64)
desc("imagej_overflow", 2, "ImageJ=1.11a\nchannels=4294967296\nframes=4294967296\n")
desc("ome_xyzct", 6, OME.format(order="XYZCT", z=3, c=2, t=1, tiffdata=""))
desc("ome_tiffdata", 4, OME.format(order="XYCZT", z=2, c=1, t=2, tiffdata=(
    '<TiffData IFD="0" FirstZ="0" FirstT="0" PlaneCount="2"/><TiffData IFD="2" FirstT="1" PlaneCount="2"/>')))
desc("ome_two_images", 2, OME.format(order="XYZCT", z=2, c=1, t=1, tiffdata="").replace(
    "</OME>", '<Image ID="Image:1"><Pixels DimensionOrder="XYZCT" Type="uint8" SizeX="2" SizeY="2" SizeZ="1"/>'
    "</Image></OME>"))
desc("tifffile_zyx", 4, '{"shape": [4, 8, 8]}')
desc("tifffile_tzcyx", 12, '{"shape": [2, 3, 2, 8, 8], "axes": "TZCYX"}')
desc("tifffile_no_axes", 6, '{"shape": [2, 3, 8, 8]}')
desc("plain", 5, "")

# --- whole TIFF files, written by tifffile as the interop tests write them
def tif(name, data, **kw):
    path = os.path.join(root, "tiff_file", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tifffile.imwrite(path, data, **kw)

rng = np.random.default_rng(1)
u16 = rng.integers(0, 4000, (3, 4, 5), dtype=np.uint16)
tif("imagej_u16.tif", u16, imagej=True, resolution=(1 / 0.1, 1 / 0.1),
    metadata={"spacing": 0.5, "unit": "um", "axes": "ZYX"})
tif("imagej_hyper_u8.tif", rng.integers(0, 255, (2, 2, 2, 4, 4), dtype=np.uint8), imagej=True,
    metadata={"axes": "TZCYX"})
tif("ome_f32.ome.tif", rng.random((3, 4, 4), dtype=np.float32), ome=True,
    metadata={"PhysicalSizeX": 0.1, "PhysicalSizeY": 0.1, "PhysicalSizeZ": 0.3})
tif("tifffile_czyx.tif", rng.integers(0, 255, (2, 3, 4, 4), dtype=np.uint8), metadata={"axes": "CZYX"})
tif("deflate_u16.tif", u16, compression="zlib", imagej=True)
tif("deflate_tiled.tif", rng.integers(0, 255, (2, 16, 16), dtype=np.uint8), tile=(16, 16), compression="zlib")
tif("bigtiff_be.tif", u16, bigtiff=True, byteorder=">")
tif("f32_nan.tif", np.array([[[np.nan, 1], [2, np.inf]]] * 2, dtype=np.float32))

# --- torch.save pickles: persistent ids for storages, _rebuild_tensor_v2, OrderedDict
torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils
torch._utils = torch_utils


def _rebuild_tensor_v2(*args):
    pass


_rebuild_tensor_v2.__module__ = "torch._utils"
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
for cls in ("FloatStorage", "HalfStorage", "LongStorage", "ByteStorage", "BFloat16Storage"):
    setattr(torch, cls, type(cls, (), {"__module__": "torch"}))


class Storage:
    def __init__(self, cls, key, numel):
        self.cls, self.key, self.numel = cls, key, numel


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (_rebuild_tensor_v2, self.args)


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", getattr(torch, obj.cls), obj.key, "cpu", obj.numel)
        return None


def pt(name, obj, protocol=2):
    import io
    b = io.BytesIO()
    TorchPickler(b, protocol=protocol).dump(obj)
    put("pickle", name, b.getvalue())


s0 = Storage("FloatStorage", "0", 12)
sd = collections.OrderedDict()
sd["conv_first.weight"] = Tensor(s0, 0, [2, 1, 2, 2], [4, 4, 2, 1])
sd["conv_first.bias"] = Tensor(s0, 8, [2], [1])
sd["layers.0.norm.weight"] = Tensor(Storage("HalfStorage", "1", 3), 0, [3], [1])
sd["step"] = Tensor(Storage("LongStorage", "2", 1), 0, [], [])
pt("state_dict_p2", sd)
pt("state_dict_p4", sd, protocol=4)
pt("wrapped_params", {"params": sd, "epoch": 3, "lr": 1e-4, "name": "x", "flags": [True, None]})
pt("nested_modules", {"model": {"body": sd, "head": {"w": Tensor(s0, 2, [2, 3], [1, 2])}}})
pt("transposed_view", {"w": Tensor(s0, 0, [3, 4], [1, 3])})

# --- safetensors
def st(name, tensors, metadata=None):
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for tname, (dtype, shape, raw) in tensors.items():
        header[tname] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    put("safetensors", name, struct.pack("<Q", len(h)) + h + data)


f32 = np.arange(6, dtype=np.float32).tobytes()
st("f32_i64_meta", {"a": ("F32", [2, 3], f32), "b": ("I64", [2], np.array([1, -2]).tobytes())},
   {"config": '{"embed_dim":8}', "name": "seed"})
st("all_dtypes", {"f64": ("F64", [1], b"\0" * 8), "f16": ("F16", [2], b"\0" * 4), "bf16": ("BF16", [1], b"\0" * 2),
                  "i32": ("I32", [1], b"\0" * 4), "i16": ("I16", [1], b"\0" * 2), "i8": ("I8", [1], b"\1"),
                  "u8": ("U8", [2], b"\1\2"), "bool": ("BOOL", [1], b"\1"), "empty": ("F32", [0, 3], b""),
                  "scalar": ("F32", [], b"\0" * 4)})
st("no_metadata", {"w": ("F32", [1, 1, 2, 2], np.ones(4, np.float32).tobytes())})

# --- Zarr metadata: 2 bytes .zarray length, 2 bytes .zattrs length, .zarray, .zattrs, chunk
# 0.0.0 as stored. Stores written by zarr-python (numcodecs) with each compressor, plus
# NGFF 0.4 3D / 5D multiscales, 0.3 axis names, and a plain array without .zattrs.
def zarr_seed(name, arr, compressor, zattrs, separator="."):
    import tempfile
    import zarr
    with tempfile.TemporaryDirectory() as d:
        z = zarr.open_array(os.path.join(d, "0"), mode="w", shape=arr.shape, chunks=(2,) * (arr.ndim - 2) + (4, 4),
                            dtype=arr.dtype, compressor=compressor, fill_value=0, dimension_separator=separator)
        z[...] = arr
        zarray = open(os.path.join(d, "0", ".zarray"), "rb").read()
        key = separator.join(["0"] * arr.ndim)
        chunk = open(os.path.join(d, "0", key), "rb").read()
    za = json.dumps(zattrs).encode() if zattrs is not None else b""
    put("zarr_metadata", name, struct.pack("<HH", len(zarray), len(za)) + zarray + za + chunk)


def ngff(axes, scale, version="0.4"):
    return {"multiscales": [{"version": version, "axes": axes,
                             "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}]}


try:
    import numcodecs
    space = [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    a3 = (np.arange(5 * 6 * 7, dtype=np.uint16) * 7).reshape(5, 6, 7)
    zarr_seed("blosc_lz4_u2", a3, numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE), ngff(space, [0.5, 0.1, 0.1]))
    zarr_seed("blosc_zstd_f4", a3.astype("<f4") / 3, numcodecs.Blosc("zstd", 3, numcodecs.Blosc.BITSHUFFLE),
              ngff(space, [2.0, 0.25, 0.25]))
    zarr_seed("zstd_u1_slash", (a3 % 251).astype(np.uint8), numcodecs.Zstd(3), ngff(space, [1, 1, 1]), "/")
    zarr_seed("zlib_be_u2", a3.astype(">u2"), numcodecs.Zlib(1), ngff(space, [0.3, 0.1, 0.1]))
    zarr_seed("gzip_be_f4", a3.astype(">f4"), numcodecs.GZip(1), None)
    zarr_seed("none_u2_plain", a3, None, None)
    axes5 = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}] + space
    zarr_seed("blosc_5d", a3.reshape(1, 1, 5, 6, 7), numcodecs.Blosc(), ngff(axes5, [1, 1, 0.5, 0.1, 0.1]))
    zarr_seed("v03_names", a3, numcodecs.Zlib(1), ngff(["z", "y", "x"], [1, 1, 1], "0.3"))
except ImportError:
    print("zarr / numcodecs are not installed: zarr_metadata seeds not written", file=sys.stderr)

# --- prompt files, from the library's writer
fuzzer = os.path.join(sys.argv[1] if len(sys.argv) > 1 else "build-fuzz", "fuzz", "fuzz_prompt_file")
if os.path.exists(fuzzer):
    os.makedirs(os.path.join(root, "prompt_file"), exist_ok=True)
    subprocess.run([fuzzer], env=dict(os.environ, ISO_FUZZ_WRITE_SEED=os.path.join(root, "prompt_file")), check=True)
else:
    print(f"{fuzzer} is not built: prompt_file seeds not written", file=sys.stderr)
