// Volume input and output: TIFF / OME-TIFF, OME-Zarr, HDF5. The format comes from the path
// (parse_volume_path): `*.zarr` / `*.ome.zarr` (also `store.zarr/0`, an array inside) is
// OME-Zarr (zarr.h), `file.h5:/dataset` or `file.h5` is HDF5, anything else TIFF.
//
//   Volume v = read_volume("stack.tif");                       // ImageJ, OME or plain TIFF
//   ReadOptions ro; ro.channel = 1;
//   Volume c = read_volume("hyper.tif", ro);                   // one channel of a hyperstack
//   write_volume("out.ome.tif", v);                            // flavour from the name
//   WriteOptions wo; wo.compression = WriteOptions::Deflate;
//   write_volume("out.tif", v, wo);
//   Volume z = read_volume("stack.ome.zarr");                  // level 0 of an OME-Zarr image
//   Volume h = read_volume("stack.h5:/volume/data");           // voxel size from element_size_um
//
// Reading: multi-page stacks of uint8, uint16 or float32 samples; classic TIFF and
// BigTIFF; striped or tiled; any compression libtiff decodes. Voxel size comes from
// ImageJ metadata (ImageDescription `spacing=`, `unit=`, X/YResolution) or OME-XML
// (PhysicalSizeX/Y/Z with units). Known length units (nm, mm, Å, ...) are converted to
// micrometres and the volume's unit is then "micron". A file without calibration reads
// as voxel size 1,1,1 with unit "pixel".
//
// Writing goes through a temporary file renamed into place (AtomicOutput), one plane at
// a time. Uncompressed files are laid out as ImageJ writes them (IFD 0, all planes back to
// back, then the other IFDs), because ImageJ and tifffile read an ImageJ stack as
// contiguous planes; past 4 GiB they get ImageJ's large-stack layout (a classic TIFF
// whose IFD 0 and images=N describe the whole stack), not BigTIFF, which ImageJ 1.x
// cannot open. BigTIFF is used on request, for compressed data over 4 GiB, and for
// OME-TIFF over 4 GiB (OME readers need an IFD per plane).
//
// Every problem with the file (missing, not a TIFF, truncated, implausible header,
// unsupported sample format, ...) throws InputError with one line naming the file.
//
// HDF5: one dataset of uint8, uint16 or float32 (chunked or contiguous, any filter the
// HDF5 library decodes); without a dataset name the file's only 3D dataset. The voxel size
// is the dataset's `element_size_um` attribute (z, y, x in micrometres, ilastik's and
// IsoVEM's convention); without it the volume is uncalibrated. Output (`out.h5`, dataset
// /data, or `out.h5:/name`) writes a new file with element_size_um; WriteOptions::Deflate
// gives 32x256x256 chunks with shuffle and gzip.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "isoprompt/fileutil.h"
#include "isoprompt/volume.h"

namespace isoprompt {

// What to do with NaN/Inf voxels of a float32 stack. Keep (the library default, for `info`
// and `convert`) warns; Refuse (the CLI default of every command that computes on the
// voxels) throws InputError with the count and the first position; Replace puts the median
// of the finite 3x3x3 neighbours in their place and says how many (replace_non_finite).
enum class NanPolicy { Keep, Refuse, Replace };
// "refuse" / "replace" (the --nan flag); throws InputError otherwise.
NanPolicy parse_nan_policy(const std::string& s);

struct ReadOptions {
  int channel = -1;       // channel to read when the file has several (-1: there must be one)
  int time = -1;          // time point to read when the file has several (-1: there must be one)
  bool allow_2d = false;  // accept a single-plane image (a volume with z = 1)
  NanPolicy nan = NanPolicy::Keep;
};

// Provenance written into an output file (what produced it: method, scores, fallbacks), as
// `isoprompt.KEY=VALUE` lines of an ImageJ description (tifffile's imagej_metadata shows
// them) or an OME MapAnnotation in the "isoprompt" namespace. Keys are [a-z0-9_]; in
// values, line breaks are written as spaces and '=' as ':'.
using FileNotes = std::vector<std::pair<std::string, std::string>>;

// What read_volume found out about the file (for `isoprompt info`). The TIFF fields
// describe the other containers where they apply (tiled: chunked; pages: z planes).
struct TiffFileInfo {
  std::string path;
  std::string container = "TIFF";  // "TIFF", "Zarr" or "HDF5"
  std::string flavor = "plain";  // "ImageJ", "OME" or "plain"; "OME-Zarr", "Zarr"; "HDF5"
  bool bigtiff = false;
  bool big_endian = false;
  bool tiled = false;
  std::string compression = "none";  // "none", "deflate", "LZW", "packbits", ...
  int64_t pages = 0;                 // IFDs in the file
  int channels = 1, times = 1;       // sizes of the C and T axes
  int channel = 0, time = 0;         // the ones that were read
  bool calibrated = false;           // the file carries a physical voxel size
  std::string file_unit;             // unit as written in the file ("" if none)
  int64_t nan_count = 0, inf_count = 0;  // non-finite voxels (float data)
  FileNotes notes;                       // isoprompt's provenance notes, if it wrote the file
  // Zarr and HDF5: the array read (relative to the store) or dataset, its chunk shape
  // (z, y, x; 0 when contiguous), the NGFF version and the multiscales levels.
  std::string dataset;
  Shape3 chunks;
  std::string format_version;
  int levels = 1;
};

// Reads a 3D stack (z, y, x). Throws InputError naming the file on any problem with it.
Volume read_volume(const std::string& path, const ReadOptions& opts = {}, TiffFileInfo* info = nullptr);

// OME-Zarr chunk compressors: blosc with lz4 or zstd (byte shuffle, level 5, zarr-python's
// default is blosc-lz4), zstd (level 3), zlib and gzip (level 1, numcodecs' default), none.
enum class ZarrCompressor { BloscLz4, BloscZstd, Zstd, Zlib, Gzip, None };
// "blosc-lz4" (or "blosc"), "blosc-zstd", "zstd", "zlib" (or "deflate"), "gzip", "none";
// throws InputError otherwise.
ZarrCompressor parse_zarr_compressor(const std::string& s);
const char* zarr_compressor_name(ZarrCompressor c);

struct ZarrWriteOptions {
  ZarrCompressor compressor = ZarrCompressor::BloscLz4;
  Shape3 chunks{0, 0, 0};  // z, y, x edge of a chunk; 0: automatic (at most 32, 256, 256)
  int levels = 1;          // multiscales levels: 1 = full resolution only; each more halves y, x
  // Resumable writing (ZarrWriter only): build the store in this directory instead of a
  // hidden temporary one, keep it when the writer is destroyed without commit(), and, when
  // it already holds a store of the same layout, continue: chunk files are written
  // atomically, so a chunk that is there is whole (ZarrWriter::has_chunk).
  std::string resume_dir;
};

struct WriteOptions {
  enum Flavor { Auto, ImageJ, OME } flavor = Auto;  // Auto: OME for *.ome.tif(f), else ImageJ
  enum Compression { None, Deflate, LZW } compression = None;
  bool force_bigtiff = false;  // BigTIFF even when the data are small
  // ImageJ's large-stack layout (IFD 0 only; images=N planes back to back) even when the
  // stack is small; past 4 GiB an uncompressed ImageJ TIFF gets it by itself. Uncompressed
  // classic ImageJ TIFF only (otherwise ignored).
  bool large_stack_layout = false;
  FileNotes notes;  // provenance to record in the file
  ZarrWriteOptions zarr;  // OME-Zarr outputs only
};

// Writes atomically (temp file + rename): on failure the output path is untouched.
void write_volume(const std::string& path, const Volume& v, const WriteOptions& opts = {});

// Throws InputError when `path` names no volume: a missing file, or for an OME-Zarr path a
// store that is not a directory. (`file.h5:/dataset` checks file.h5.)
void check_input_volume(const std::string& path, const std::string& what = "input file");

// Helpers shared with the CLI.
WriteOptions::Flavor parse_flavor(const std::string& s);           // "imagej", "ome"
WriteOptions::Compression parse_compression(const std::string& s);  // "none", "deflate", "lzw"
// Data size above which write_volume switches to BigTIFF by itself.
uint64_t bigtiff_threshold_bytes();

// Length unit as found in a file -> factor to micrometres, or 0 when it is not a length
// unit this library knows ("pixel", "", "inch" is known: 25400).
double unit_to_micron(const std::string& unit);
// value * factor (a unit_to_micron result). Powers of ten shift the decimal exponent
// instead of multiplying, so 33.855 nm becomes exactly the double 0.033855.
double scale_to_micron(double value, double factor);

}  // namespace isoprompt
