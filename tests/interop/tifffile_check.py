#!/usr/bin/python3
"""Reads isoprompt's outputs with tifffile (napari's TIFF reader) and checks them.

Usage: tifffile_check.py MANIFEST. Each manifest line (tab separated) names a TIFF, a raw
file with the volume's bytes as the test wrote them (native byte order), and what the TIFF
must be: dtype, nz ny nx, flavour (imagej|ome), calibrated (0|1), voxel z y x in micron,
container (classic|bigtiff), layout (ifds: one IFD per plane | large: ImageJ's large-stack
layout, IFD 0 only), planes to compare ("all", or z indices "0,17,41" whose planes the raw
file holds in that order; then the stack is read through tifffile.memmap, as napari does
for stacks larger than memory).

Prints "FAIL <path>: <reason>" for every problem, then "checked N files, M failures" and,
when imagecodecs is missing (Debian has no package of it), how many LZW files had
everything but their pixels checked.
"""
import sys

import numpy as np
import tifffile

try:
    import imagecodecs  # noqa: F401  (tifffile decodes LZW only through it)
    HAVE_IMAGECODECS = True
except ImportError:
    HAVE_IMAGECODECS = False


def close(a, b, rel=1e-12):
    return abs(a - b) <= rel * abs(b)


def check(fields):
    (path, raw, dtype, nz, ny, nx, flavor, calibrated, vz, vy, vx, container, layout, planes) = fields
    nz, ny, nx = int(nz), int(ny), int(nx)
    vz, vy, vx = float(vz), float(vy), float(vx)
    calibrated = calibrated == '1'
    errs = []
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        want_shape = (nz, ny, nx) if nz > 1 else (ny, nx)
        if series.shape != want_shape:
            errs.append(f'series shape {series.shape}, expected {want_shape}')
        if series.dtype != np.dtype(dtype):
            errs.append(f'dtype {series.dtype}, expected {dtype}')
        if tif.is_bigtiff != (container == 'bigtiff'):
            errs.append(f'is_bigtiff {tif.is_bigtiff}, expected {container}')
        npages = len(tif.pages)
        want_pages = 1 if layout == 'large' else nz
        if npages != want_pages:
            errs.append(f'{npages} pages, expected {want_pages}')
        page = tif.pages[0]
        res = {}
        for tag in ('XResolution', 'YResolution', 'ResolutionUnit'):
            if tag in page.tags:
                res[tag] = page.tags[tag].value
        if flavor == 'imagej':
            meta = tif.imagej_metadata
            if not tif.is_imagej or meta is None:
                errs.append('not an ImageJ file for tifffile')
                meta = {}
            if nz > 1 and meta.get('images') != nz:
                errs.append(f"images={meta.get('images')}, expected {nz}")
            if calibrated:
                if meta.get('unit') != 'micron':
                    errs.append(f"unit={meta.get('unit')!r}, expected 'micron'")
                if meta.get('spacing') != vz:
                    errs.append(f"spacing={meta.get('spacing')!r}, expected {vz!r}")
                if int(res.get('ResolutionUnit', -1)) != 1:
                    errs.append(f"ResolutionUnit {res.get('ResolutionUnit')}, expected 1 (none)")
                scale = 1.0
            elif 'spacing' in meta or 'unit' in meta:
                errs.append(f'uncalibrated file has spacing/unit {meta}')
        else:
            if not tif.is_ome:
                errs.append('not an OME-TIFF for tifffile')
            xml = tif.ome_metadata
            pixels = tifffile.xml2dict(xml)['OME']['Image']['Pixels'] if xml else {}
            sizes = (pixels.get('SizeZ'), pixels.get('SizeY'), pixels.get('SizeX'))
            if sizes != (nz, ny, nx):
                errs.append(f'OME SizeZ/Y/X {sizes}, expected {(nz, ny, nx)}')
            if calibrated:
                for axis, want in (('X', vx), ('Y', vy), ('Z', vz)):
                    got = pixels.get('PhysicalSize' + axis)
                    unit = pixels.get('PhysicalSize' + axis + 'Unit')
                    if got is None or float(got) != want or unit != '\u00b5m':
                        errs.append(f'PhysicalSize{axis}={got!r} {unit!r}, expected {want!r} \u00b5m')
                if int(res.get('ResolutionUnit', -1)) != 3:
                    errs.append(f"ResolutionUnit {res.get('ResolutionUnit')}, expected 3 (cm)")
                scale = 1e4  # micrometres per centimetre
            elif any('PhysicalSize' + a in pixels for a in 'XYZ'):
                errs.append('uncalibrated OME-TIFF has PhysicalSize')
        # isoprompt writes uncompressed files itself, with the best 32-bit rationals; for
        # compressed ones libtiff writes them, and it holds resolutions as float32.
        rel = 1e-12 if page.compression == 1 else 1e-7
        if calibrated:
            for tag, want in (('XResolution', vx), ('YResolution', vy)):
                if tag not in res:
                    errs.append(f'no {tag}')
                    continue
                num, den = res[tag]
                if not close(den / num * scale, want, rel):
                    errs.append(f'{tag} {num}/{den} gives pixel {den / num * scale!r}, expected {want!r}')
        elif 'XResolution' in res:
            errs.append(f'uncalibrated file has XResolution {res["XResolution"]}')

        if errs:  # the pixels are not worth comparing when the structure is wrong
            return errs
        if page.compression == 5 and not HAVE_IMAGECODECS:
            return None  # Debian has no python3-imagecodecs: tifffile cannot decode LZW
        if planes == 'all':
            want = np.fromfile(raw, dtype=dtype).reshape(nz, ny, nx)
            got = series.asarray().reshape(nz, ny, nx)
            zs = list(range(nz))
        else:
            zs = [int(z) for z in planes.split(',')]
            want = np.fromfile(raw, dtype=dtype).reshape(len(zs), ny, nx)
            got = tifffile.memmap(path, mode='r').reshape(nz, ny, nx)
        for i, z in enumerate(zs):
            a = np.ascontiguousarray(got[z]).view(np.uint8)
            b = np.ascontiguousarray(want[i]).view(np.uint8)
            if not np.array_equal(a, b):
                bad = np.count_nonzero(got[z] != want[i])
                errs.append(f'plane {z} of {nz}: {bad} of {ny * nx} pixels differ')
                break
    return errs


def main():
    n = failures = unchecked = 0
    with open(sys.argv[1], encoding='utf-8') as manifest:
        for line in manifest:
            fields = line.rstrip('\n').split('\t')
            if len(fields) != 14:
                continue
            n += 1
            try:
                errs = check(fields)
            except Exception as e:  # a crash in tifffile is a failure of that file
                errs = [f'{type(e).__name__}: {e}']
            if errs is None:
                unchecked += 1
            elif errs:
                failures += 1
                print(f'FAIL {fields[0]}: ' + '; '.join(errs))
    print(f'checked {n} files, {failures} failures')
    if unchecked:
        print(f'{unchecked} LZW files checked without their pixels (tifffile decodes LZW only with imagecodecs, '
              'which is not installed)')


if __name__ == '__main__':
    main()
