// The real-image pretraining corpus: modality and acquisition group from file names, the
// whole-group held-out split, and reading every plane of a file for the pair stream.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <regex>

#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/io.h"
#include "isoprompt/log.h"
#include "isoprompt/pretrain.h"
#include "isoprompt/stats.h"

namespace isoprompt {

const char* modality_name(Modality m) {
  switch (m) {
    case Modality::EM:
      return "em";
    case Modality::Fluorescence:
      return "fluo";
    case Modality::Other:
      break;
  }
  return "other";
}

Modality modality_of(const std::string& file_name) {
  const std::string base = std::filesystem::path(file_name).filename().string();
  if (base.rfind("em_", 0) == 0) return Modality::EM;
  if (base.rfind("fluo_", 0) == 0) return Modality::Fluorescence;
  return Modality::Other;
}

std::string corpus_group(const std::string& file_name) {
  std::string k = std::filesystem::path(file_name).filename().string();
  for (const char* ext : {".ome.tiff", ".ome.tif", ".tiff", ".tif"}) {
    const size_t n = std::strlen(ext);
    if (k.size() > n && k.compare(k.size() - n, n, ext) == 0) {
      k.resize(k.size() - n);
      break;
    }
  }
  // Suffixes that name a part of one acquisition, not another acquisition: the source
  // collection, channel or split index, and the corpus's "_slices" (a subset of a volume).
  static const std::regex source("_neubias");
  static const std::regex part("_(slices|background|signal)$");
  static const std::regex split("_(train|test|val)(_[0-9]+)?$");
  static const std::regex channel("_(ch|c|w|d)[0-9]+$");
  k = std::regex_replace(k, source, "");
  k = std::regex_replace(k, split, "");
  k = std::regex_replace(k, channel, "");
  k = std::regex_replace(k, part, "");
  return k;
}

CorpusSplit split_corpus(const std::vector<std::string>& file_names, int64_t every) {
  if (every < 2)
    throw_input("the held-out split needs every >= 2 (one group in {} held out), got {}", every,
                every);
  std::map<Modality, std::map<std::string, std::vector<std::string>>> groups;
  for (const std::string& f : file_names) {
    const std::string base = std::filesystem::path(f).filename().string();
    groups[modality_of(base)][corpus_group(base)].push_back(base);
  }
  CorpusSplit s;
  for (const auto& [modality, by_group] : groups) {
    int64_t i = 0;
    for (const auto& [group, files] : by_group) {
      auto& dst = (i % every == 1) ? s.held_out : s.train;
      dst.insert(dst.end(), files.begin(), files.end());
      ++i;
    }
  }
  std::sort(s.train.begin(), s.train.end());
  std::sort(s.held_out.begin(), s.held_out.end());
  return s;
}

std::vector<std::string> list_tiff_files(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw_input("--data {} is not a directory", dir);
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string ext = lowercase_extension(e.path().string());
    if (e.is_regular_file() &&
        (ext == ".tif" || ext == ".tiff" || ext == ".ome.tif" || ext == ".ome.tiff"))
      out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  if (out.empty()) throw_input("--data {} contains no .tif/.tiff files", dir);
  return out;
}

namespace {

// Percentile normalisation as inference does it (1 / 99.8), into `dst` (nz * ny * nx floats).
void normalise_into(const Volume& v, float* dst) {
  const auto pc = percentiles(v, {1.0, 99.8});
  const double lo = pc[0], hi = pc[1] > pc[0] ? pc[1] : pc[0] + 1;
  const float scale = static_cast<float>(1.0 / (hi - lo)), off = static_cast<float>(lo);
  for (int64_t i = 0; i < v.numel(); ++i) dst[i] = (voxel_as_float(v, i) - off) * scale;
}

}  // namespace

CorpusImage load_corpus_image(const std::string& path) {
  CorpusImage img;
  img.name = std::filesystem::path(path).filename().string();
  img.modality = modality_of(img.name);
  // Read unit (0, 0) first: it tells how many channels and time points there are.
  ReadOptions ro;
  ro.allow_2d = true;
  ro.channel = 0;
  ro.time = 0;
  TiffFileInfo info;
  std::vector<Volume> units;
  units.push_back(read_volume(path, ro, &info));
  // The other units would repeat what the first one logged (e.g. "no calibration") per frame.
  const LogLevel level = log_level();
  if (level < LogLevel::Warn) set_log_level(LogLevel::Warn);
  struct Restore {
    LogLevel l;
    ~Restore() { set_log_level(l); }
  } restore{level};
  for (int c = 0; c < info.channels; ++c)
    for (int t = 0; t < info.times; ++t) {
      if (c == 0 && t == 0) continue;
      ro.channel = c;
      ro.time = t;
      units.push_back(read_volume(path, ro));
    }
  const Volume& first = units.front();
  const VoxelSize vs = first.voxel_size();
  img.isotropic = units.size() == 1 && first.nz() > 1 && info.calibrated &&
                  std::abs(vs.z / vs.x - 1) < 0.05 && std::abs(vs.y / vs.x - 1) < 0.05;
  int64_t nz = 0;
  for (const Volume& u : units) nz += u.nz();
  img.planes = Volume({nz, first.ny(), first.nx()}, DType::F32, vs, first.unit());
  float* dst = img.planes.data<float>();
  for (const Volume& u : units) {
    normalise_into(u, dst);
    dst += u.numel();
  }
  return img;
}

}  // namespace isoprompt
