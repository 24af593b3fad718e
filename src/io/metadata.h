// ImageJ and OME-XML metadata: parsing what other programs wrote, and writing it so
// Fiji, napari (tifffile) and Bio-Formats read the right voxel size back.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "isoprompt/io.h"
#include "isoprompt/volume.h"

namespace isoprompt::io {

// ImageJ "ImageJ=1.x\nkey=value\n..." description. Keys are kept as written.
struct ImageJMeta {
  std::map<std::string, std::string> kv;
  int64_t images = 0, channels = 1, slices = 0, frames = 1;
  bool has_spacing = false;
  double spacing = 1.0;
  std::string unit;  // decoded ("\u00B5m" escapes resolved to UTF-8)
  FileNotes notes;   // isoprompt's own `isoprompt.KEY=VALUE` lines, in file order
};
bool is_imagej_description(const std::string& d);
// Throws InputError (naming `path`) on malformed numbers.
ImageJMeta parse_imagej(const std::string& d, const std::string& path);

// What we need from OME-XML: the first Image's Pixels.
struct OmeMeta {
  int64_t size_x = 0, size_y = 0, size_z = 1, size_c = 1, size_time = 1;
  std::string dimension_order = "XYZCT";
  std::string type;
  double phys[3] = {0, 0, 0};  // z, y, x as written (0 = absent)
  std::string phys_unit[3];    // units as written ("" = default µm)
  // IFD of plane (z, c, t), from TiffData or the default sequential layout; -1 = none.
  std::vector<int64_t> plane_ifd;
  int64_t ifd_of(int64_t z, int64_t c, int64_t t) const;
  int n_images = 1;
  FileNotes notes;  // the "isoprompt" MapAnnotation
};
bool is_ome_description(const std::string& d);
// Throws InputError when the planes (SizeZ x SizeC x SizeT) outnumber `n_pages`, the pages
// of this file (multi-file OME-TIFF is not supported), or their product overflows.
OmeMeta parse_ome(const std::string& xml, const std::string& path, int64_t n_pages);

// What an output file says about its volume, without the voxels: a plane-wise writer
// (planes.h) writes the metadata before it has seen the planes.
struct VolumeMeta {
  Shape3 shape;
  DType dtype = DType::U8;
  VoxelSize voxel;
  std::string unit = "pixel";
};
VolumeMeta volume_meta(const Volume& v);

// Descriptions we write.
std::string imagej_description(const VolumeMeta& v, double min_value, double max_value,
                               const FileNotes& notes = {});
std::string ome_description(const VolumeMeta& v, const std::string& name,
                            const FileNotes& notes = {});

// Replaces control characters (from a corrupt file) so messages stay one readable line.
std::string printable(const std::string& s);

// Formats a double with the fewest digits that read back as the same double.
std::string exact_number(double v);
// Rounds to `digits` significant digits (used to remove float32 noise from 1/resolution).
double round_significant(double v, int digits);

}  // namespace isoprompt::io
