// TIFF / OME-TIFF input and output for Volume.
//
//   Volume v = read_volume("stack.tif");                       // ImageJ, OME or plain TIFF
//   ReadOptions ro; ro.channel = 1;
//   Volume c = read_volume("hyper.tif", ro);                   // one channel of a hyperstack
//   write_volume("out.ome.tif", v);                            // flavour from the name
//   WriteOptions wo; wo.compression = WriteOptions::Deflate;
//   write_volume("out.tif", v, wo);
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
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

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

// What read_volume found out about the file (for `isoprompt info`).
struct TiffFileInfo {
  std::string path;
  std::string flavor = "plain";  // "ImageJ", "OME" or "plain"
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
};

// Reads a 3D stack (z, y, x). Throws InputError naming the file on any problem with it.
Volume read_volume(const std::string& path, const ReadOptions& opts = {}, TiffFileInfo* info = nullptr);

struct WriteOptions {
  enum Flavor { Auto, ImageJ, OME } flavor = Auto;  // Auto: OME for *.ome.tif(f), else ImageJ
  enum Compression { None, Deflate, LZW } compression = None;
  bool force_bigtiff = false;  // BigTIFF even when the data are small
  // ImageJ's large-stack layout (IFD 0 only; images=N planes back to back) even when the
  // stack is small; past 4 GiB an uncompressed ImageJ TIFF gets it by itself. Uncompressed
  // classic ImageJ TIFF only (otherwise ignored).
  bool large_stack_layout = false;
  FileNotes notes;  // provenance to record in the file
};

// Writes atomically (temp file + rename): on failure the output path is untouched.
void write_volume(const std::string& path, const Volume& v, const WriteOptions& opts = {});

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
