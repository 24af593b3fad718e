// Orthogonal-view previews as 8-bit grayscale PNG, with no image library: the PNG is
// written with stored (uncompressed) deflate blocks, so it needs nothing but this file.
//
//   write_ortho_png("demo_out/views.png", {{"cubic", cubic}, {"restored", iso}, {"gt", gt}},
//                   0.0, 1.0);   // one row per volume: XY | XZ | YZ, same contrast for all
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "isoprompt/volume.h"

namespace isoprompt {

/// Writes a width x height 8-bit grayscale PNG (row-major pixels), atomically.
void write_png_gray(const std::string& path, const std::vector<uint8_t>& pixels, int64_t width, int64_t height);

/// Grid image: one row per volume, three panels per row, XY at the middle z, XZ at the
/// middle y and YZ at the middle x (z runs down in XZ/YZ), separated by `gap` white pixels.
/// Intensities map [lo, hi] -> [0, 255], clipped. Volumes may differ in shape; each panel
/// is placed top-left in its cell. Returns the pixels and sets width/height.
std::vector<uint8_t> ortho_grid(const std::vector<std::pair<std::string, Volume>>& rows, double lo, double hi,
                                int64_t& width, int64_t& height, int64_t gap = 4);

/// ortho_grid() written to a PNG.
void write_ortho_png(const std::string& path, const std::vector<std::pair<std::string, Volume>>& rows, double lo,
                     double hi);

}  // namespace isoprompt
