// How the planes (z, c, t) of a TIFF stack map to its pages, from the first page's
// ImageJ, OME-XML or tifffile description. Internal to the TIFF reader; separate so the
// description parsers can be tested and fuzzed as strings, without a file.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/metadata.h"

namespace isoprompt::io {

// How planes (z, c, t) map to pages.
struct Layout {
  int64_t nz = 1, nc = 1, nt = 1;
  std::string flavor = "plain";
  std::vector<int64_t> ifd;  // (t * nc + c) * nz + z -> page
  // ImageJ's layout for stacks over 4 GiB: one IFD, then all images back to back.
  bool contiguous = false;
  int64_t images() const { return nz * nc * nt; }
  int64_t page(int64_t z, int64_t c, int64_t t) const {
    return ifd[static_cast<size_t>((t * nc + c) * nz + z)];
  }
};

// `n_pages` is the number of pages (IFDs) in the file. `contiguous_max` is how many images
// a single-page file could hold after its first page's data (ImageJ's large-stack layout);
// no plane count above it or n_pages is planned. Fills `ij` or `ome` with the parsed
// metadata. Guarantees: unless `contiguous`, ifd has images() entries, each in
// [0, n_pages); if `contiguous`, ifd is empty or has images() <= contiguous_max entries,
// each in [0, images()). Throws InputError naming `path` for inconsistent metadata.
Layout plan_layout(const std::string& desc, int64_t n_pages, int64_t contiguous_max,
                   const std::string& path, std::unique_ptr<ImageJMeta>& ij,
                   std::unique_ptr<OmeMeta>& ome);

}  // namespace isoprompt::io
