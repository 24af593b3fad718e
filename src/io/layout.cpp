// Plane-to-page layout of TIFF stacks from their ImageJ, OME-XML or tifffile descriptions.
#include "io/layout.h"

#include <cctype>
#include <nlohmann/json.hpp>

#include "isoprompt/checked.h"
#include "isoprompt/error.h"
#include "isoprompt/log.h"

namespace isoprompt::io {
namespace {

// tifffile's own description {"shape": [...], "axes": "..."} (napari saves this way).
// A plain z stack needs nothing from it; with more than one non-planar axis the axes
// say which is which, and without them the file is ambiguous.
bool tifffile_layout(const std::string& desc, int64_t n_pages, const std::string& path,
                     Layout& lay) {
  if (desc.empty() || desc[0] != '{') return false;
  const auto j = nlohmann::json::parse(desc, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("shape") || !j["shape"].is_array()) return false;
  std::vector<int64_t> dims;
  for (const auto& d : j["shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() < 1) return false;
    dims.push_back(d.get<int64_t>());
  }
  if (dims.size() < 3) return false;
  std::vector<int64_t> lead(dims.begin(), dims.end() - 2);
  // Checked: a product that overflows cannot equal the page count.
  const auto n_lead = checked_product(lead);
  if (!n_lead || *n_lead != n_pages)
    return false;  // several series or a different layout: plain pages
  int n_big = 0;
  for (int64_t d : lead) n_big += d > 1;
  if (n_big <= 1) return false;  // a plain stack
  std::string axes =
      j.contains("axes") && j["axes"].is_string() ? j["axes"].get<std::string>() : "";
  std::string shape_text = j["shape"].dump();
  if (axes.size() != dims.size())
    throw_input(
        "{} was written by tifffile with shape {} and no axes: more than one axis besides y and x, "
        "so the z "
        "axis is ambiguous (save it as an ImageJ hyperstack or OME-TIFF)",
        path, shape_text);
  std::vector<int64_t> stride(lead.size(), 1);
  for (size_t i = lead.size(); i-- > 1;) stride[i - 1] = stride[i] * lead[i];
  int64_t pos_z = -1, pos_c = -1, pos_t = -1;
  for (size_t i = 0; i < lead.size(); ++i) {
    if (lead[i] == 1) continue;  // a length-1 axis does not move the page index
    const char a = static_cast<char>(std::toupper(static_cast<unsigned char>(axes[i])));
    int64_t* slot = a == 'Z' ? &pos_z : a == 'C' ? &pos_c : a == 'T' ? &pos_t : nullptr;
    if (!slot || *slot >= 0)
      throw_input(
          "{} was written by tifffile with axes {} and shape {}: only one Z, C and T axis besides "
          "Y and X "
          "can be read",
          path, printable(axes), shape_text);
    *slot = static_cast<int64_t>(i);
  }
  auto size_of = [&](int64_t pos) { return pos < 0 ? int64_t(1) : lead[static_cast<size_t>(pos)]; };
  auto stride_of = [&](int64_t pos) {
    return pos < 0 ? int64_t(0) : stride[static_cast<size_t>(pos)];
  };
  lay.nz = size_of(pos_z);
  lay.nc = size_of(pos_c);
  lay.nt = size_of(pos_t);
  lay.ifd.resize(static_cast<size_t>(lay.images()));
  for (int64_t t = 0; t < lay.nt; ++t)
    for (int64_t c = 0; c < lay.nc; ++c)
      for (int64_t z = 0; z < lay.nz; ++z)
        lay.ifd[static_cast<size_t>((t * lay.nc + c) * lay.nz + z)] =
            z * stride_of(pos_z) + c * stride_of(pos_c) + t * stride_of(pos_t);
  return true;
}

}  // namespace

Layout plan_layout(const std::string& desc, int64_t n_pages, int64_t contiguous_max,
                   const std::string& path, std::unique_ptr<ImageJMeta>& ij,
                   std::unique_ptr<OmeMeta>& ome) {
  Layout lay;
  if (is_ome_description(desc)) {
    ome = std::make_unique<OmeMeta>(parse_ome(desc, path, n_pages));
    lay.flavor = "OME";
    lay.nz = ome->size_z;
    lay.nc = ome->size_c;
    lay.nt = ome->size_time;
    lay.ifd = ome->plane_ifd;
    if (ome->n_images > 1)
      log_warn("{} holds {} OME images (series): reading the first", path, ome->n_images);
    for (int64_t p : lay.ifd)
      if (p < 0 || p >= n_pages)
        throw_input(
            "OME-TIFF {} refers to {} planes ({} z x {} c x {} t) but has only {} pages in this "
            "file "
            "(multi-file OME-TIFF is not supported)",
            path, lay.nz * lay.nc * lay.nt, lay.nz, lay.nc, lay.nt, n_pages);
    return lay;
  }
  if (is_imagej_description(desc)) {
    ij = std::make_unique<ImageJMeta>(parse_imagej(desc, path));
    lay.flavor = "ImageJ";
    lay.nc = ij->channels;
    lay.nt = ij->frames;
    int64_t images = ij->images > 0 ? ij->images : n_pages;
    // Every count is at most 1e15 (parse_imagej), but their products can overflow.
    const auto c_t = checked_mul(lay.nc, lay.nt);
    lay.nz = ij->slices > 0 ? ij->slices : std::max<int64_t>(1, c_t ? images / *c_t : 1);
    const auto planes = checked_product({lay.nz, lay.nc, lay.nt});
    if (ij->images <= 0 && planes) images = *planes;
    if (!planes || *planes != images)
      throw_input(
          "bad ImageJ metadata in {}: channels={} x slices={} x frames={} does not equal images={}",
          path, lay.nc, lay.nz, lay.nt, images);
    if (images > n_pages) {
      // One page and images=N: ImageJ wrote the stack contiguously (checked by the caller).
      lay.contiguous = n_pages == 1;
      if (!lay.contiguous)
        throw_input(
            "truncated TIFF file {}: its ImageJ metadata says images={} but it has only {} pages",
            path, images, n_pages);
    }
    // More images than the file's bytes can hold: read_volume refuses the contiguous
    // layout as truncated before anything is indexed, so no map is built for it.
    if (lay.contiguous && images > contiguous_max) return lay;
    // ImageJ hyperstacks store channels fastest, then slices, then frames.
    lay.ifd.resize(static_cast<size_t>(images));
    for (int64_t t = 0; t < lay.nt; ++t)
      for (int64_t c = 0; c < lay.nc; ++c)
        for (int64_t z = 0; z < lay.nz; ++z)
          lay.ifd[static_cast<size_t>((t * lay.nc + c) * lay.nz + z)] =
              (t * lay.nz + z) * lay.nc + c;
    return lay;
  }
  if (tifffile_layout(desc, n_pages, path, lay)) return lay;
  lay.nz = n_pages;
  lay.ifd.resize(static_cast<size_t>(n_pages));
  for (int64_t z = 0; z < n_pages; ++z) lay.ifd[static_cast<size_t>(z)] = z;
  return lay;
}

}  // namespace isoprompt::io
