#!/usr/bin/python3
"""zarr-python (numcodecs) and h5py, the clients behind napari's OME-Zarr and HDF5 readers,
against isoprompt.

  zarr_check.py write DIR      writes OME-Zarr stores and HDF5 files the way those clients
                               do, and DIR/manifest.tsv saying what isoprompt must read
  zarr_check.py check MANIFEST opens what isoprompt wrote and compares it bit-exactly

Manifest lines (tab-separated): path, raw (the expected C-order bytes, written by this
script or by the test), dtype, z, y, x, voxel z, y, x (0 = uncalibrated), then for `check`:
levels and the unit the axes must carry. `check` prints one OK or FAIL line per file and
exits 1 on any FAIL.
"""
import json
import os
import sys

import numpy as np


def write(d):
    import h5py
    import numcodecs
    import zarr

    rows = []
    rng = np.random.default_rng(7)

    def data(dtype, shape):
        if np.dtype(dtype).kind == "f":
            return (rng.standard_normal(shape) * 1000).astype(dtype)
        return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)

    def raw(name, a):
        p = os.path.join(d, name + ".raw")
        np.ascontiguousarray(a).astype(a.dtype.newbyteorder("=")).tofile(p)
        return p

    def ngff_store(name, a, chunks, compressor, voxel, five_d=False, separator=".", unit="micrometer",
                   version="0.4", fill=0, holes=()):
        path = os.path.join(d, name + ".ome.zarr")
        root = zarr.open_group(path, mode="w")
        arr = root.create_dataset("0", shape=a.shape, chunks=chunks, dtype=a.dtype, compressor=compressor,
                                  fill_value=fill, dimension_separator=separator)
        arr[...] = a
        # Chunks left unwritten read as fill_value (zarr-python never writes them).
        for key in holes:
            os.remove(os.path.join(path, "0", key))
        names = "tczyx" if five_d else "zyx"
        types = {"t": "time", "c": "channel"}
        axes = [{"name": n, "type": types.get(n, "space"), **({"unit": unit} if n in "zyx" and unit else {})}
                for n in names]
        scale = ([1.0, 1.0] if five_d else []) + list(voxel)
        root.attrs["multiscales"] = [{"version": version, "name": name, "axes": axes,
                                      "datasets": [{"path": "0", "coordinateTransformations": [
                                          {"type": "scale", "scale": scale}]}]}]
        return path

    def row(path, a, voxel, channel=-1):
        zyx = a if a.ndim == 3 else a[0, max(channel, 0)]
        z, y, x = zyx.shape
        rows.append([path, raw(os.path.basename(path).split(".")[0] + (f"_c{channel}" if channel >= 0 else ""), zyx),
                     str(zyx.dtype.newbyteorder("=").name), str(z), str(y), str(x)] +
                    [repr(v) for v in voxel] + [str(channel)])

    blosc = lambda cname, shuffle: numcodecs.Blosc(cname=cname, clevel=5, shuffle=shuffle)
    vox = (0.15, 0.033855, 0.0338542)
    compressors = [("blosc_lz4", blosc("lz4", numcodecs.Blosc.SHUFFLE)),
                   ("blosc_zstd", blosc("zstd", numcodecs.Blosc.SHUFFLE)),
                   ("blosc_bitshuffle", blosc("lz4", numcodecs.Blosc.BITSHUFFLE)),
                   ("zstd", numcodecs.Zstd(level=3)), ("zlib", numcodecs.Zlib(level=1)),
                   ("gzip", numcodecs.GZip(level=1)), ("none", None)]
    # Every compressor with every dtype, edge chunks partial in z, y and x.
    for cname, comp in compressors:
        for dtype in ("uint8", "<u2", "<f4"):
            a = data(dtype, (5, 13, 11))
            tag = np.dtype(dtype).name
            row(ngff_store(f"zarr_{cname}_{tag}", a, (2, 4, 3), comp, vox), a, vox)
    # Big-endian arrays, the "/" separator, missing chunks with a fill value, unit nanometer.
    a = data(">u2", (4, 9, 10))
    row(ngff_store("zarr_big_endian_u2", a, (3, 4, 4), numcodecs.Zstd(), vox), a, vox)
    a = data(">f4", (3, 8, 8))
    row(ngff_store("zarr_big_endian_f4", a, (2, 5, 3), blosc("lz4", 1), vox), a, vox)
    a = data("<u2", (4, 9, 10))
    row(ngff_store("zarr_slash", a, (3, 4, 4), blosc("lz4", 1), vox, separator="/"), a, vox)
    a = data("<u2", (4, 8, 8))
    a[0:2, 0:4, 4:8] = 77
    a[2:4, 4:8, 0:4] = 77
    row(ngff_store("zarr_holes", a, (2, 4, 4), numcodecs.Zlib(), vox, fill=77, holes=("0.0.1", "1.1.0")), a, vox)
    a = data("<f4", (3, 6, 5))
    row(ngff_store("zarr_nm", a, (3, 6, 5), None, (300.0, 33.855, 33.855), unit="nanometer"), a,
        (0.3, 0.033855, 0.033855))
    # 5D t, c, z, y, x (as ome-zarr-py and bioformats2raw write), channel 1 of 2.
    a = data("<u2", (1, 2, 4, 7, 6))
    row(ngff_store("zarr_5d", a, (1, 1, 2, 4, 4), blosc("zstd", 1), vox, five_d=True), a, vox, channel=1)
    # A plain array (no OME metadata): uncalibrated.
    a = data("<u2", (3, 5, 6))
    p = os.path.join(d, "plain.zarr")
    zarr.save_array(p, a, chunks=(2, 2, 4), compressor=numcodecs.Zlib())
    row(p, a, (0, 0, 0))

    # HDF5 as h5py writes it (ilastik's element_size_um convention), chunked and contiguous.
    for dtype, chunks, comp in (("uint8", None, None), ("<u2", (2, 4, 4), "gzip"), ("<f4", (3, 5, 2), None),
                                (">u2", None, None), (">f4", (5, 2, 7), "gzip")):
        a = data(dtype, (5, 9, 7))
        tag = np.dtype(dtype).name + ("_be" if dtype.startswith(">") else "") + (f"_{comp}" if comp else "")
        p = os.path.join(d, f"h5_{tag}{'_chunked' if chunks else ''}.h5")
        # element_size_um as float32 where ilastik writes it so, float64 (h5py's default) otherwise.
        f32 = comp is not None
        with h5py.File(p, "w") as f:
            ds = f.create_dataset("volume/data", data=a, chunks=chunks, compression=comp)
            ds.attrs["element_size_um"] = np.array([0.5, 0.125, 0.1], dtype=np.float32 if f32 else np.float64)
            f.create_dataset("labels", data=np.zeros((3, 3), np.uint8))  # 2D: not a candidate
        expect = tuple(float(np.float32(v)) for v in (0.5, 0.125, 0.1)) if f32 else (0.5, 0.125, 0.1)
        row(p if dtype != ">f4" else p + ":/volume/data", a, expect)
    # Files isoprompt must refuse with a clear message (checked by the test, not listed).
    with h5py.File(os.path.join(d, "h5_lzf.h5"), "w") as f:
        f.create_dataset("data", data=data("<u2", (2, 8, 8)), chunks=(1, 8, 8), compression="lzf")
    with h5py.File(os.path.join(d, "h5_two.h5"), "w") as f:
        f["a"] = data("<u2", (2, 3, 4))
        f["g/b"] = data("uint8", (3, 4, 5))
    with h5py.File(os.path.join(d, "h5_int16.h5"), "w") as f:
        f["data"] = np.zeros((2, 3, 4), np.int16)
    a = data("<u2", (4, 5, 6))
    p = os.path.join(d, "h5_uncalibrated.h5")
    with h5py.File(p, "w") as f:
        f["stack"] = a
    row(p + ":/stack", a, (0, 0, 0))
    with open(os.path.join(d, "manifest.tsv"), "w") as f:
        for r in rows:
            f.write("\t".join(r) + "\n")
    print(f"wrote {len(rows)} files (zarr {zarr.__version__}, numcodecs {numcodecs.__version__}, "
          f"h5py {h5py.__version__})")


def check(manifest):
    import h5py
    import zarr

    bad = 0
    for line in open(manifest):
        path, raw, dtype, z, y, x, vz, vy, vx, levels, unit = line.rstrip("\n").split("\t")
        want = np.fromfile(raw, dtype=dtype).reshape(int(z), int(y), int(x))
        vox = [float(vz), float(vy), float(vx)]
        problems = []
        try:
            if path.endswith(".h5"):
                with h5py.File(path, "r") as f:
                    got = f["data"][...]
                    es = f["data"].attrs.get("element_size_um")
                if vox[0] > 0 and (es is None or list(es) != vox):
                    problems.append(f"element_size_um {es} != {vox}")
            else:
                root = zarr.open_group(path, mode="r")
                ms = root.attrs["multiscales"][0]
                axes = ms["axes"]
                if [a["name"] for a in axes] != ["z", "y", "x"] or any(a.get("type") != "space" for a in axes):
                    problems.append(f"axes {axes}")
                if any(a.get("unit", "") != unit for a in axes):
                    problems.append(f"axis units {[a.get('unit') for a in axes]} != {unit!r}")
                if len(ms["datasets"]) != int(levels):
                    problems.append(f"{len(ms['datasets'])} levels != {levels}")
                for lvl, ds in enumerate(ms["datasets"]):
                    scale = [t for t in ds["coordinateTransformations"] if t["type"] == "scale"][0]["scale"]
                    k = 2.0 ** lvl
                    if scale != [vox[0], vox[1] * k, vox[2] * k]:
                        problems.append(f"level {lvl} scale {scale} != {[vox[0], vox[1] * k, vox[2] * k]}")
                    level = root[ds["path"]][...]
                    if lvl == 0:
                        got = level
                    else:
                        # Each level is the 2x2 mean of the one above (edge cells average what is there).
                        up = prev.astype(np.float64)
                        ey, ex = -up.shape[1] % 2, -up.shape[2] % 2
                        s = np.pad(up, ((0, 0), (0, ey), (0, ex)))
                        c = np.pad(np.ones(up.shape[1:]), ((0, ey), (0, ex)))
                        mean = (s[:, 0::2, 0::2] + s[:, 1::2, 0::2] + s[:, 0::2, 1::2] + s[:, 1::2, 1::2]) / \
                               (c[0::2, 0::2] + c[1::2, 0::2] + c[0::2, 1::2] + c[1::2, 1::2])
                        exp = mean.astype(np.float32) if level.dtype.kind == "f" else np.floor(mean + 0.5).astype(level.dtype)
                        if level.shape != exp.shape or not np.array_equal(level, exp):
                            problems.append(f"level {lvl} is not the 2x2 mean of level {lvl - 1}")
                    prev = level
            if got.dtype != want.dtype or got.shape != want.shape:
                problems.append(f"{got.dtype} {got.shape} != {want.dtype} {want.shape}")
            elif got.tobytes() != want.tobytes():
                problems.append(f"{int(np.sum(got != want))} voxels differ")
        except Exception as e:  # noqa: BLE001 - any failure to open is a finding
            problems.append(f"{type(e).__name__}: {e}")
        print(("FAIL " if problems else "OK ") + path + ("" if not problems else ": " + "; ".join(problems)))
        bad += bool(problems)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        check(sys.argv[2])
