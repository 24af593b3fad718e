// Safetensors reading/writing, key normalisation and weight hashing.
#include "isoprompt/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "isoprompt/checked.h"
#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "model/sha256.h"
#include "model/shapes.h"

namespace isoprompt {

namespace {

struct DTypeName {
  const char* name;
  at::ScalarType type;
};
constexpr DTypeName kDTypes[] = {
    {"F32", at::kFloat}, {"F64", at::kDouble}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
    {"I64", at::kLong},  {"I32", at::kInt},    {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},   {"BOOL", at::kBool}};

const char* dtype_name(at::ScalarType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return d.name;
  throw_error("cannot store tensors of type {} in safetensors", c10::toString(t));
}

std::string read_all(const std::string& path) {
  check_input_file(path, "model file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw CheckpointError(fmt::format("cannot open {}", path));
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return bytes;
}

}  // namespace

std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

bool is_safetensors_bytes(const std::string& head) {
  // u64 header length, then a JSON object.
  return head.size() >= 9 && head[8] == '{';
}

TensorMap read_safetensors(const std::string& path, std::map<std::string, std::string>* metadata,
                           std::vector<std::string>* order) {
  return parse_safetensors(read_all(path), path, metadata, order);
}

TensorMap parse_safetensors(const std::string& bytes, const std::string& path,
                            std::map<std::string, std::string>* metadata,
                            std::vector<std::string>* order) {
  if (bytes.size() < 8) throw CheckpointError(fmt::format("{} is truncated: {} bytes, not a safetensors file", path, bytes.size()));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(bytes[i]);
  if (n > bytes.size() - 8)
    throw CheckpointError(fmt::format("{} is truncated or not a safetensors file: header length {} exceeds file size {}",
                                      path, n, bytes.size()));
  nlohmann::ordered_json header;
  try {
    header = nlohmann::ordered_json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  } catch (const std::exception& e) {
    throw CheckpointError(fmt::format("{} has a malformed safetensors header: {}", path, e.what()));
  }
  if (!header.is_object()) throw CheckpointError(fmt::format("{} has a malformed safetensors header: not a JSON object", path));
  const char* data = bytes.data() + 8 + n;
  const uint64_t data_size = bytes.size() - 8 - n;
  TensorMap out;
  struct ByteRange {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<ByteRange> ranges;  // of the non-empty tensors, to refuse overlaps
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (metadata) {
        if (!entry.is_object()) throw CheckpointError(fmt::format("{}: __metadata__ is not an object", path));
        for (const auto& [k, v] : entry.items())
          (*metadata)[k] = v.is_string() ? v.get<std::string>() : v.dump();
      }
      continue;
    }
    try {
      const std::string dt = entry.at("dtype").get<std::string>();
      at::ScalarType type = at::kFloat;
      bool found = false;
      for (const auto& d : kDTypes)
        if (dt == d.name) { type = d.type; found = true; }
      if (!found) throw CheckpointError(fmt::format("{}: tensor '{}' has unsupported dtype {}", path, name, dt));
      std::vector<int64_t> shape = entry.at("shape").get<std::vector<int64_t>>();
      const auto offs = entry.at("data_offsets").get<std::vector<uint64_t>>();
      if (offs.size() != 2 || offs[1] < offs[0])
        throw CheckpointError(fmt::format("{}: tensor '{}' has bad data_offsets", path, name));
      for (int64_t d : shape)
        if (d < 0) throw CheckpointError(fmt::format("{}: tensor '{}' has a negative dimension", path, name));
      const auto numel = checked_product(shape);
      const auto nbytes_checked = numel ? checked_mul(*numel, static_cast<int64_t>(c10::elementSize(type))) : numel;
      if (!nbytes_checked)
        throw CheckpointError(fmt::format("{}: tensor '{}' has an implausible shape {} (its size overflows)", path,
                                          name, shape_str(shape)));
      const uint64_t nbytes = static_cast<uint64_t>(*nbytes_checked);
      if (offs[1] - offs[0] != nbytes)
        throw CheckpointError(fmt::format("{}: tensor '{}' of shape {} {} needs {} bytes but its data_offsets span {}",
                                          path, name, shape_str(shape), dt, nbytes, offs[1] - offs[0]));
      if (offs[1] > data_size)
        throw CheckpointError(fmt::format("{} is truncated: tensor '{}' ends at byte {} of the data but only {} bytes are present",
                                          path, name, offs[1], data_size));
      if (out.count(name)) throw CheckpointError(fmt::format("{}: duplicate tensor '{}'", path, name));
      if (nbytes) ranges.push_back({offs[0], offs[1], name});
      at::Tensor t = at::empty(shape, at::TensorOptions().dtype(type));
      if (nbytes) std::memcpy(t.data_ptr(), data + offs[0], nbytes);
      out.emplace(name, std::move(t));
      if (order) order->push_back(name);
    } catch (const nlohmann::json::exception& e) {
      throw CheckpointError(fmt::format("{}: malformed safetensors entry '{}': {}", path, name, e.what()));
    }
  }
  // Each tensor owns its bytes (the format forbids shared ranges): an overlap is a corrupt
  // or crafted file, whose tensors would silently alias.
  std::stable_sort(ranges.begin(), ranges.end(), [](const ByteRange& a, const ByteRange& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].begin < ranges[i - 1].end)
      throw CheckpointError(fmt::format("{}: tensors '{}' and '{}' overlap in the data (bytes {}-{} and {}-{})", path,
                                        ranges[i - 1].name, ranges[i].name, ranges[i - 1].begin, ranges[i - 1].end,
                                        ranges[i].begin, ranges[i].end));
  return out;
}

void write_safetensors(const std::string& path, const TensorList& tensors,
                       const std::map<std::string, std::string>& metadata) {
  check_output_path(path);
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json md = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) md[k] = v;
    header["__metadata__"] = md;
  }
  std::vector<at::Tensor> cpu;
  cpu.reserve(tensors.size());
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (header.contains(name)) throw_error("duplicate tensor name '{}' when writing {}", name, path);
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    const uint64_t nb = uint64_t(c.numel()) * c.element_size();
    header[name] = {{"dtype", dtype_name(c.scalar_type())}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + nb}}};
    offset += nb;
    cpu.push_back(std::move(c));
  }
  std::string json = header.dump();
  while (json.size() % 8) json += ' ';
  AtomicOutput out(path);
  {
    std::ofstream f(out.temp_path(), std::ios::binary | std::ios::trunc);
    if (!f) throw_error("cannot write {}: {}", out.temp_path(), std::strerror(errno));
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(json.size()) >> (8 * i));
    f.write(reinterpret_cast<const char*>(len), 8);
    f.write(json.data(), static_cast<std::streamsize>(json.size()));
    for (const auto& c : cpu)
      f.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.numel() * c.element_size()));
    f.flush();
    if (!f) throw_error("cannot write {}: disk full or i/o error", path);
  }
  out.commit();
}

TensorMap read_tensor_file(const std::string& path, std::map<std::string, std::string>* metadata,
                           std::vector<std::string>* order) {
  check_input_file(path, "model file");
  std::string head(16, '\0');
  {
    std::ifstream f(path, std::ios::binary);
    f.read(&head[0], 16);
    head.resize(static_cast<size_t>(f.gcount()));
  }
  if (is_safetensors_bytes(head)) return read_safetensors(path, metadata, order);
  return read_torch_checkpoint(path, order);
}

TensorMap normalize_state_dict_keys(const TensorMap& in, const std::string& path) {
  auto starts = [](const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; };
  // Strip "module." only when every key has it (DataParallel / DistributedDataParallel saves).
  bool all_module = !in.empty();
  for (const auto& kv : in) all_module = all_module && starts(kv.first, "module.");
  bool unimodel = false;
  for (const auto& kv : in) {
    const std::string k = all_module ? kv.first.substr(7) : kv.first;
    unimodel = unimodel || starts(k, "conv_firstiso.");
  }
  static const std::pair<const char*, const char*> kRenames[] = {
      {"conv_firstiso.", "conv_first."}, {"conv_before_upsample0.", "conv_before_upsample."}, {"conv_last0.", "conv_last."}};
  static const char* kOtherTasks[] = {"conv_firstsr.", "upsamplesr.", "conv_firstdT.", "conv_firstproj.", "conv_firstv.",
                                      "conv_before_upsamplev.", "conv_lastv.", "conv_first0.", "project.", "upsample."};
  TensorMap out;
  for (const auto& [key, t] : in) {
    std::string k = all_module ? key.substr(7) : key;
    if (unimodel) {
      bool other = false;
      for (const char* p : kOtherTasks) other = other || starts(k, p);
      if (other) continue;
      for (const auto& [from, to] : kRenames)
        if (starts(k, from)) { k = to + k.substr(std::strlen(from)); break; }
    }
    if (!out.emplace(k, t).second)
      throw CheckpointError(fmt::format("{}: two tensors map to the same key '{}' after renaming", path, k));
  }
  return out;
}

void check_finite_weights(const TensorMap& tensors, const std::string& source) {
  for (const auto& [name, t] : tensors) {
    if (!t.is_floating_point()) continue;
    const at::Tensor bad = t.isfinite().logical_not().reshape({-1});
    const int64_t n = bad.sum().item<int64_t>();
    if (n == 0) continue;
    const int64_t first = bad.nonzero().min().item<int64_t>();
    throw CheckpointError(fmt::format("{}: tensor '{}' has {} NaN/Inf values (first at element {} of {}): "
                                      "non-finite weights are refused",
                                      source, name, n, first, t.numel()));
  }
}

std::string sha256_hex(const void* data, size_t n) {
  detail::Sha256 h;
  h.update(data, n);
  return h.hex();
}

std::string weights_hash(const TensorMap& tensors) {
  detail::Sha256 h;
  for (const auto& [name, t] : tensors) {
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    h.update(name);
    h.update(std::string("\0", 1) + c10::toString(c.scalar_type()) + shape_str(c.sizes()));
    h.update(c.data_ptr(), size_t(c.numel()) * c.element_size());
  }
  return h.hex();
}

}  // namespace isoprompt
