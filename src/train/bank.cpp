#include "isoprompt/bank.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/log.h"

namespace isoprompt {

namespace fs = std::filesystem;

namespace {

constexpr const char* kIndex = "bank.json";
constexpr const char* kSuffix = ".prompt.safetensors";
constexpr const char* kFormat = "isoprompt-prompt-bank";

std::string index_path(const std::string& dir) {
  return (fs::path(dir) / kIndex).string();
}

// Names become file names: keep them to what every filesystem and shell takes as is.
void check_name(const std::string& name) {
  const bool ok = !name.empty() && name.size() <= 128 && name.front() != '.' &&
                  name.find_first_not_of(
                      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                      "0123456789._-") == std::string::npos;
  if (!ok)
    throw_input(
        "bank entry name '{}' must be 1-128 letters, digits, '.', '_' or '-' (not "
        "starting with '.')",
        name);
}

std::string default_name(const std::string& file) {
  std::string stem = fs::path(file).filename().string();
  for (const char* suffix : {kSuffix, ".safetensors"}) {
    const std::string s(suffix);
    if (stem.size() > s.size() && stem.compare(stem.size() - s.size(), s.size(), s) == 0) {
      stem.resize(stem.size() - s.size());
      break;
    }
  }
  return stem;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

nlohmann::json entry_json(const BankEntry& e) {
  return {{"name", e.name},     {"tag", e.tag},
          {"source", e.source}, {"voxel_zyx", {e.voxel.z, e.voxel.y, e.voxel.x}},
          {"unit", e.unit},     {"added", e.added}};
}

// The index as written: entries in the order they were added.
void write_index(const std::string& dir, const std::vector<BankEntry>& entries) {
  nlohmann::json j = {{"format", kFormat}, {"version", 1}, {"entries", nlohmann::json::array()}};
  for (const BankEntry& e : entries) j["entries"].push_back(entry_json(e));
  AtomicOutput out(index_path(dir));
  {
    std::ofstream f(out.temp_path());
    f << j.dump(2) << "\n";
    if (!f.good()) throw_error("cannot write {}", out.temp_path());
  }
  out.commit();
}

std::vector<BankEntry> read_index(const std::string& dir) {
  const std::string path = index_path(dir);
  std::ifstream f(path);
  if (!f) throw_input("{} cannot be read", path);
  std::stringstream ss;
  ss << f.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (!j.is_object() || j.value("format", "") != kFormat || !j.contains("entries") ||
      !j["entries"].is_array())
    throw_input("{} is not a prompt bank index (expected format '{}')", path, kFormat);
  std::vector<BankEntry> entries;
  for (const auto& je : j["entries"]) {
    BankEntry e;
    try {
      e.name = je.at("name").get<std::string>();
      e.tag = je.value("tag", "");
      e.source = je.value("source", "");
      e.unit = je.value("unit", "");
      e.added = je.value("added", "");
      if (je.contains("voxel_zyx")) {
        const auto& v = je["voxel_zyx"];
        e.voxel = {v.at(0).get<double>(), v.at(1).get<double>(), v.at(2).get<double>()};
      }
    } catch (const nlohmann::json::exception& ex) {
      throw_input("{}: malformed entry {}: {}", path, je.dump(), ex.what());
    }
    check_name(e.name);
    entries.push_back(std::move(e));
  }
  return entries;
}

}  // namespace

std::string PromptBank::path(const BankEntry& e) const {
  return (fs::path(dir) / (e.name + kSuffix)).string();
}

PromptBank open_bank(const std::string& dir, bool must_exist) {
  PromptBank bank;
  bank.dir = dir;
  if (!fs::exists(index_path(dir))) {
    if (must_exist)
      throw_input("{} is not a prompt bank (no {}): make one with `isoprompt bank add {} PROMPT`",
                  dir, kIndex, dir);
    return bank;
  }
  bank.entries = read_index(dir);
  for (BankEntry& e : bank.entries) {
    const std::string file = bank.path(e);
    check_input_file(file, fmt::format("prompt file of bank entry '{}'", e.name));
    e.info = read_prompt_info(file);
  }
  return bank;
}

std::string unique_bank_name(const PromptBank& bank, const std::string& wanted) {
  std::string base;
  for (char ch : wanted.substr(0, 120))
    base += std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '_' || ch == '-'
                ? ch
                : '_';
  if (base.empty() || base.front() == '.') base = "prompt" + base;
  auto taken = [&](const std::string& n) {
    return std::any_of(bank.entries.begin(), bank.entries.end(),
                       [&](const BankEntry& e) { return e.name == n; });
  };
  std::string name = base;
  for (int i = 2; taken(name); ++i) name = fmt::format("{}-{}", base, i);
  return name;
}

BankEntry bank_add(const std::string& dir, const std::string& prompt_file, BankEntry what) {
  check_input_file(prompt_file, "prompt file");
  what.info = read_prompt_info(prompt_file);
  if (what.info.mode != TuneParams::Mode::Prompt)
    throw_input(
        "{} holds a {} model, not a prompt: only prompts go into a bank (they are small "
        "and share the frozen backbone)",
        prompt_file, mode_name(what.info.mode));
  if (what.name.empty()) what.name = default_name(prompt_file);
  check_name(what.name);
  if (what.added.empty()) what.added = utc_now();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw_input("cannot create the bank folder {}: {}", dir, ec.message());
  PromptBank bank = open_bank(dir, false);
  for (const BankEntry& e : bank.entries)
    if (e.name == what.name)
      throw_input("bank {} already has an entry '{}' (remove it first, or pass --name)", dir,
                  what.name);
  // The file first, then the index: a crash in between leaves an unindexed file, never an
  // index entry without its file.
  const std::string dest = bank.path(what);
  {
    AtomicOutput out(dest);
    fs::copy_file(prompt_file, out.temp_path(), fs::copy_options::overwrite_existing, ec);
    if (ec) throw_input("cannot copy {} into the bank: {}", prompt_file, ec.message());
    out.commit();
  }
  bank.entries.push_back(what);
  write_index(dir, bank.entries);
  return what;
}

void bank_remove(const std::string& dir, const std::vector<std::string>& names) {
  PromptBank bank = open_bank(dir, true);
  for (const std::string& n : names)
    if (std::none_of(bank.entries.begin(), bank.entries.end(),
                     [&](const BankEntry& e) { return e.name == n; }))
      throw_input("bank {} has no entry '{}'", dir, n);
  std::vector<BankEntry> kept, gone;
  for (BankEntry& e : bank.entries)
    (std::find(names.begin(), names.end(), e.name) != names.end() ? gone : kept)
        .push_back(std::move(e));
  // The index first: a crash in between leaves an unindexed file, which nothing reads.
  write_index(dir, kept);
  for (const BankEntry& e : gone) fs::remove(bank.path(e));
}

BankChoice choose_prompt(const PromptBank& bank, const Volume& vol, Backbone& backbone,
                         const TuneParams& params) {
  BankChoice c;
  std::vector<std::string> files;
  std::vector<int> index;
  for (size_t i = 0; i < bank.entries.size(); ++i) {
    const BankEntry& e = bank.entries[i];
    if (e.info.backbone_hash != backbone.hash) {
      c.skipped.push_back(fmt::format("{}: tuned for backbone {} ({}), not {} ({})", e.name,
                                      e.info.backbone_name, e.info.backbone_hash.substr(0, 12),
                                      backbone.name, backbone.hash.substr(0, 12)));
      continue;
    }
    files.push_back(bank.path(e));
    index.push_back(static_cast<int>(i));
  }
  const std::vector<double> scores =
      score_prompts_on_validation(vol, backbone, params, files, &c.zero_shot_psnr, &c.interp_psnr);
  std::vector<size_t> order(scores.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  for (size_t i : order)
    c.ranking.push_back({bank.entries[static_cast<size_t>(index[i])].name, scores[i]});
  if (!order.empty() && scores[order[0]] >= c.zero_shot_psnr + kBankMinGainDb) {
    c.best = index[order[0]];
    c.path = files[order[0]];
  }
  return c;
}

}  // namespace isoprompt
