// Reader for torch.save zip checkpoints (.pt/.pth): zip access through LibTorch's
// PyTorchStreamReader plus a small pickle VM for the subset torch.save writes.
// torch::pickle_load cannot be used: it turns collections.OrderedDict (every
// state_dict) into None (pytorch/pytorch#100741).
#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <unordered_map>

#include "isoprompt/checked.h"
#include "isoprompt/checkpoint.h"
#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "model/pickle.h"
#include "model/shapes.h"

namespace isoprompt {
namespace detail {

namespace {

at::ScalarType storage_dtype(const std::string& name, bool* ok) {
  static const std::pair<const char*, at::ScalarType> kMap[] = {
      {"torch.FloatStorage", at::kFloat},   {"torch.DoubleStorage", at::kDouble}, {"torch.HalfStorage", at::kHalf},
      {"torch.BFloat16Storage", at::kBFloat16}, {"torch.LongStorage", at::kLong}, {"torch.IntStorage", at::kInt},
      {"torch.ShortStorage", at::kShort},   {"torch.CharStorage", at::kChar},     {"torch.ByteStorage", at::kByte},
      {"torch.BoolStorage", at::kBool}};
  for (const auto& [n, t] : kMap)
    if (name == n) { *ok = true; return t; }
  *ok = false;
  return at::kFloat;
}

}  // namespace

Unpickler::Unpickler(const std::string& bytes, std::string source, StorageLoader loader)
    : p_(bytes), src_(std::move(source)), load_storage_(std::move(loader)) {}

Unpickler::~Unpickler() {
  // Unlink first, then free: no object's destructor reaches another object.
  for (const PyRef& o : objects_) {
    o->items.clear();
    o->dict.clear();
  }
}

PyRef Unpickler::make(PyObj::Kind k) {
  auto o = std::make_shared<PyObj>();
  o->kind = k;
  objects_.push_back(o);
  return o;
}

void Unpickler::fail(const std::string& what) const {
  throw CheckpointError(fmt::format("{}: cannot read the pickle in this checkpoint: {} (at byte {})", src_, what, pos_));
}

const char* Unpickler::take(size_t n) {
  if (n > p_.size() - pos_) fail("unexpected end of data");  // (pos_ + n could wrap)
  const char* r = p_.data() + pos_;
  pos_ += n;
  return r;
}

uint64_t Unpickler::read_le(size_t n) {
  const auto* b = reinterpret_cast<const uint8_t*>(take(n));
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= uint64_t(b[i]) << (8 * i);
  return v;
}

std::string Unpickler::read_line() {
  const size_t end = p_.find('\n', pos_);
  if (end == std::string::npos) fail("unterminated GLOBAL");
  std::string s = p_.substr(pos_, end - pos_);
  pos_ = end + 1;
  return s;
}

PyRef Unpickler::pop() {
  if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) fail("stack underflow");
  PyRef r = stack_.back();
  stack_.pop_back();
  return r;
}

PyRef& Unpickler::top() {
  if (stack_.empty()) fail("stack underflow");
  return stack_.back();
}

std::vector<PyRef> Unpickler::pop_mark() {
  if (marks_.empty()) fail("MARK expected");
  const size_t m = marks_.back();
  marks_.pop_back();
  std::vector<PyRef> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
  stack_.resize(m);
  return items;
}

void Unpickler::memo_put(uint64_t i) {
  // Each memo entry costs an opcode, so no valid index exceeds the pickle's length.
  if (i > p_.size()) fail(fmt::format("memo index {} out of range", i));
  if (memo_.size() <= i) memo_.resize(i + 1);
  memo_[i] = top();
}

PyRef Unpickler::memo_get(uint64_t i) {
  if (i >= memo_.size() || !memo_[i]) fail(fmt::format("memo entry {} missing", i));
  return memo_[i];
}

static void dict_set(PyObj& d, const PyRef& k, const PyRef& v) {
  // Indexed, so a crafted dict of a million keys costs linear, not quadratic, time.
  if (k->kind == PyObj::Str) {
    const auto [it, fresh] = d.str_index.emplace(k->s, d.dict.size());
    if (!fresh) {
      d.dict[it->second].second = v;
      return;
    }
  }
  d.dict.emplace_back(k, v);
}

PyRef Unpickler::call(const PyRef& fn, const std::vector<PyRef>& args, int depth) {
  // _rebuild_from_type_v2 calls its first argument; torch.save nests it once.
  if (depth > 8) fail("_rebuild_from_type_v2 nested too deeply");
  if (fn->kind != PyObj::Global) {
    auto o = make(PyObj::Opaque);
    o->s = "<call of non-global>";
    return o;
  }
  const std::string& name = fn->s;
  if (name == "collections.OrderedDict" || name == "builtins.dict") return make(PyObj::Dict);
  if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
    if (args.size() < 4 || args[0]->kind != PyObj::Tensor || args[1]->kind != PyObj::Int ||
        args[2]->kind != PyObj::Tuple || args[3]->kind != PyObj::Tuple)
      fail("malformed _rebuild_tensor_v2 arguments");
    std::vector<int64_t> size, stride;
    for (const auto& a : args[2]->items) {
      if (a->kind != PyObj::Int || a->i < 0) fail("tensor size is not a list of non-negative integers");
      size.push_back(a->i);
    }
    for (const auto& a : args[3]->items) {
      if (a->kind != PyObj::Int || a->i < 0) fail("tensor stride is not a list of non-negative integers");
      stride.push_back(a->i);
    }
    if (size.size() != stride.size()) fail("tensor size and stride differ in length");
    if (size.size() > 64) fail(fmt::format("tensor has {} dimensions", size.size()));
    const at::Tensor& storage = args[0]->tensor;
    const int64_t offset = args[1]->i;
    if (offset < 0) fail(fmt::format("tensor storage offset {} is negative", offset));
    const bool empty = std::any_of(size.begin(), size.end(), [](int64_t s) { return s == 0; });
    // The last element a view reaches, checked: size 2^62 must not wrap around.
    std::optional<int64_t> last = offset;
    for (size_t d = 0; d < size.size() && last && !empty; ++d) {
      const auto span = checked_mul(size[d] - 1, stride[d]);
      last = span ? checked_add(*last, *span) : std::nullopt;
    }
    if (!empty && (!last || *last >= storage.numel()))
      fail(fmt::format("tensor view {} (stride {}, offset {}) exceeds its storage of {} elements", shape_str(size),
                       shape_str(stride), offset, storage.numel()));
    if (empty && !checked_product(size)) fail("tensor size overflows");
    auto o = make(PyObj::Tensor);
    o->tensor = empty ? at::empty(size, storage.options()) : storage.as_strided(size, stride, offset);
    return o;
  }
  if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state") {
    if (args.empty() || args[0]->kind != PyObj::Tensor) fail("malformed _rebuild_parameter arguments");
    return args[0];
  }
  if (name == "torch._utils._rebuild_from_type_v2") {
    if (args.size() < 3 || args[2]->kind != PyObj::Tuple) fail("malformed _rebuild_from_type_v2 arguments");
    return call(args[0], args[2]->items, depth + 1);
  }
  auto o = make(PyObj::Opaque);
  o->s = name;
  return o;
}

PyRef Unpickler::run() {
  for (;;) {
    const uint8_t op = uint8_t(*take(1));
    switch (op) {
      case 0x80: take(1); break;              // PROTO
      case 0x95: take(8); break;              // FRAME
      case '.': {                             // STOP
        if (stack_.size() != 1) fail("stack does not hold one object at STOP");
        return stack_.back();
      }
      case 'c': {                             // GLOBAL
        auto g = make(PyObj::Global);
        const std::string mod = read_line();
        g->s = mod + "." + read_line();
        stack_.push_back(g);
        break;
      }
      case 0x93: {                            // STACK_GLOBAL
        PyRef nm = pop(), mod = pop();
        if (nm->kind != PyObj::Str || mod->kind != PyObj::Str) fail("STACK_GLOBAL needs strings");
        auto g = make(PyObj::Global);
        g->s = mod->s + "." + nm->s;
        stack_.push_back(g);
        break;
      }
      case 'q': memo_put(read_le(1)); break;  // BINPUT
      case 'r': memo_put(read_le(4)); break;  // LONG_BINPUT
      case 0x94: memo_put(memo_.size()); break;  // MEMOIZE
      case 'h': stack_.push_back(memo_get(read_le(1))); break;  // BINGET
      case 'j': stack_.push_back(memo_get(read_le(4))); break;  // LONG_BINGET
      case '(': marks_.push_back(stack_.size()); break;         // MARK
      case '}': stack_.push_back(make(PyObj::Dict)); break;     // EMPTY_DICT
      case ']': stack_.push_back(make(PyObj::List)); break;     // EMPTY_LIST
      case ')': stack_.push_back(make(PyObj::Tuple)); break;    // EMPTY_TUPLE
      case 't': case 'l': {                                     // TUPLE, LIST
        auto o = make(op == 't' ? PyObj::Tuple : PyObj::List);
        o->items = pop_mark();
        stack_.push_back(o);
        break;
      }
      case 'd': {                                               // DICT
        auto items = pop_mark();
        if (items.size() % 2) fail("odd number of items for DICT");
        auto o = make(PyObj::Dict);
        for (size_t i = 0; i < items.size(); i += 2) dict_set(*o, items[i], items[i + 1]);
        stack_.push_back(o);
        break;
      }
      case 0x85: case 0x86: case 0x87: {                        // TUPLE1..3
        const size_t n = op - 0x84u;
        auto o = make(PyObj::Tuple);
        o->items.resize(n);
        for (size_t i = n; i-- > 0;) o->items[i] = pop();
        stack_.push_back(o);
        break;
      }
      case 'X': case 0x8c: case 0x8d: case 'B': case 'C': case 0x8e: {  // (SHORT_)BINUNICODE(8), (SHORT_)BINBYTES(8)
        const size_t len = (op == 0x8c || op == 'C') ? read_le(1) : (op == 0x8d || op == 0x8e) ? read_le(8) : read_le(4);
        auto o = make(PyObj::Str);
        o->s.assign(take(len), len);
        stack_.push_back(o);
        break;
      }
      case 'J': {                                               // BININT
        auto o = make(PyObj::Int);
        o->i = int32_t(uint32_t(read_le(4)));
        stack_.push_back(o);
        break;
      }
      case 'K': case 'M': {                                     // BININT1, BININT2
        auto o = make(PyObj::Int);
        o->i = int64_t(read_le(op == 'K' ? 1 : 2));
        stack_.push_back(o);
        break;
      }
      case 0x8a: {                                              // LONG1
        const size_t n = read_le(1);
        if (n > 8) fail("integer too large");
        auto o = make(PyObj::Int);
        uint64_t v = n ? read_le(n) : 0;
        if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t(0) << (8 * n);  // sign-extend
        o->i = int64_t(v);
        stack_.push_back(o);
        break;
      }
      case 'G': {                                               // BINFLOAT (big-endian)
        const auto* b = reinterpret_cast<const uint8_t*>(take(8));
        uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v = (v << 8) | b[i];
        auto o = make(PyObj::Float);
        std::memcpy(&o->f, &v, 8);
        stack_.push_back(o);
        break;
      }
      case 'N': stack_.push_back(make(PyObj::None)); break;
      case 0x88: case 0x89: {                                   // NEWTRUE, NEWFALSE
        auto o = make(PyObj::Bool);
        o->i = op == 0x88;
        stack_.push_back(o);
        break;
      }
      case 'R': {                                               // REDUCE
        PyRef args = pop(), fn = pop();
        if (args->kind != PyObj::Tuple) fail("REDUCE arguments are not a tuple");
        stack_.push_back(call(fn, args->items, 0));
        break;
      }
      case 0x81: {                                              // NEWOBJ
        PyRef args = pop(), cls = pop();
        (void)args;
        if (cls->kind == PyObj::Global && cls->s == "collections.OrderedDict") {
          stack_.push_back(make(PyObj::Dict));
        } else {
          auto o = make(PyObj::Opaque);
          o->s = cls->kind == PyObj::Global ? cls->s : "<object>";
          stack_.push_back(o);
        }
        break;
      }
      case 'b': {                                               // BUILD: state is ignored
        pop();
        top();
        break;
      }
      case 's': {                                               // SETITEM
        PyRef v = pop(), k = pop();
        PyRef& d = top();
        if (d->kind == PyObj::Dict) dict_set(*d, k, v);
        break;
      }
      case 'u': {                                               // SETITEMS
        auto items = pop_mark();
        if (items.size() % 2) fail("odd number of items for SETITEMS");
        PyRef& d = top();
        if (d->kind == PyObj::Dict)
          for (size_t i = 0; i < items.size(); i += 2) dict_set(*d, items[i], items[i + 1]);
        break;
      }
      case 'a': {                                               // APPEND
        PyRef v = pop();
        PyRef& l = top();
        if (l->kind == PyObj::List) l->items.push_back(v);
        break;
      }
      case 'e': {                                               // APPENDS
        auto items = pop_mark();
        PyRef& l = top();
        if (l->kind == PyObj::List) l->items.insert(l->items.end(), items.begin(), items.end());
        break;
      }
      case 'Q': {                                               // BINPERSID
        PyRef pid = pop();
        // ('storage', <dtype>Storage, key, location, numel)
        if (pid->kind != PyObj::Tuple || pid->items.size() < 5 || pid->items[0]->kind != PyObj::Str ||
            pid->items[0]->s != "storage" || pid->items[1]->kind != PyObj::Global || pid->items[2]->kind != PyObj::Str ||
            pid->items[4]->kind != PyObj::Int)
          fail("unsupported persistent id (not a tensor storage)");
        bool ok = false;
        const at::ScalarType dt = storage_dtype(pid->items[1]->s, &ok);
        if (!ok) fail("unsupported storage type " + pid->items[1]->s);
        const std::string& key = pid->items[2]->s;
        if (pid->items[4]->i < 0) fail(fmt::format("storage {} has a negative size {}", key, pid->items[4]->i));
        auto it = storages_.find(key);
        if (it == storages_.end()) it = storages_.emplace(key, load_storage_(key, dt, pid->items[4]->i)).first;
        auto o = make(PyObj::Tensor);
        o->tensor = it->second;
        stack_.push_back(o);
        break;
      }
      default:
        fail(fmt::format("unsupported pickle opcode 0x{:02x}", op));
    }
  }
}

}  // namespace detail

namespace {

using detail::PyObj;
using detail::PyRef;

// A state_dict nests a few levels (a dict of module dicts at most); anything deeper, or a
// dict that contains itself, is not one.
constexpr int kMaxNesting = 32;

void flatten(const PyRef& o, const std::string& prefix, TensorMap& out, std::vector<std::string>* order,
             const std::string& path, std::vector<const PyObj*>& open) {
  if (o->kind == PyObj::Tensor) {
    if (out.emplace(prefix, o->tensor).second && order) order->push_back(prefix);
    return;
  }
  if (o->kind != PyObj::Dict) return;
  if (std::find(open.begin(), open.end(), o.get()) != open.end())
    throw CheckpointError(fmt::format("{} is not a state_dict: the dict at '{}' contains itself", path, prefix));
  if (open.size() >= kMaxNesting)
    throw CheckpointError(
        fmt::format("{} is not a state_dict: dicts nested more than {} levels deep (at '{}')", path, kMaxNesting, prefix));
  open.push_back(o.get());
  for (const auto& [k, v] : o->dict) {
    if (k->kind != PyObj::Str) continue;
    flatten(v, prefix.empty() ? k->s : prefix + "." + k->s, out, order, path, open);
  }
  open.pop_back();
}

const PyRef* dict_get(const PyObj& d, const std::string& key) {
  for (const auto& kv : d.dict)
    if (kv.first->kind == PyObj::Str && kv.first->s == key) return &kv.second;
  return nullptr;
}

}  // namespace

TensorMap read_torch_checkpoint(const std::string& path, std::vector<std::string>* order) {
  check_input_file(path, "model file");
  char magic[2] = {0, 0};
  {
    std::ifstream f(path, std::ios::binary);
    f.read(magic, 2);
  }
  if (magic[0] != 'P' || magic[1] != 'K') {
    if (uint8_t(magic[0]) == 0x80)
      throw CheckpointError(fmt::format(
          "{} uses the legacy (pre-1.6, non-zip) torch.save format, which is not supported: re-save it with "
          "torch.save(torch.load(f), g) in a current PyTorch, or convert it to .safetensors", path));
    throw CheckpointError(fmt::format("{} is neither a torch.save zip checkpoint (.pt/.pth) nor a .safetensors file", path));
  }
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error& e) {
    throw CheckpointError(fmt::format("{} is truncated or not a valid zip archive ({})", path, e.what_without_backtrace()));
  }
  std::string pickle;
  try {
    if (!reader->hasRecord("data.pkl"))
      throw CheckpointError(fmt::format("{} is a zip archive without data.pkl: not a torch.save checkpoint "
                                        "(a TorchScript file from torch.jit.save is not supported)", path));
    auto [ptr, size] = reader->getRecord("data.pkl");
    pickle.assign(static_cast<const char*>(ptr.get()), size);
  } catch (const c10::Error& e) {
    throw CheckpointError(fmt::format("{} is corrupt: {}", path, e.what_without_backtrace()));
  }
  auto loader = [&](const std::string& key, at::ScalarType dt, int64_t numel) -> at::Tensor {
    const std::string rec = "data/" + key;
    try {
      if (!reader->hasRecord(rec)) throw CheckpointError(fmt::format("{} is corrupt: storage record {} is missing", path, rec));
      auto [ptr, size] = reader->getRecord(rec);
      const auto need_bytes = checked_mul(numel, static_cast<int64_t>(c10::elementSize(dt)));
      if (!need_bytes)
        throw CheckpointError(fmt::format("{} is corrupt: storage {} claims {} elements", path, rec, numel));
      const size_t need = static_cast<size_t>(*need_bytes);
      if (size < need)
        throw CheckpointError(fmt::format("{} is corrupt: storage {} has {} bytes, expected {}", path, rec, size, need));
      at::Tensor t = at::empty({numel}, at::TensorOptions().dtype(dt));
      if (need) std::memcpy(t.data_ptr(), ptr.get(), need);
      return t;
    } catch (const c10::Error& e) {
      throw CheckpointError(fmt::format("{} is corrupt: {}", path, e.what_without_backtrace()));
    }
  };
  return detail::state_dict_from_pickle(pickle, path, loader, order);
}

namespace detail {

TensorMap state_dict_from_pickle(const std::string& pickle, const std::string& path,
                                 const Unpickler::StorageLoader& loader,
                                 std::vector<std::string>* order) {
  Unpickler up(pickle, path, loader);
  PyRef root = up.run();
  if (root->kind == PyObj::Opaque)
    throw CheckpointError(fmt::format("{} holds a pickled Python object ({}), not a state_dict: save it with "
                                      "torch.save(model.state_dict(), path)", path, root->s));
  if (root->kind != PyObj::Dict)
    throw CheckpointError(fmt::format("{} does not hold a state_dict (top-level object is not a dict)", path));
  const PyRef* inner = nullptr;
  for (const char* key : {"params_ema", "params", "state_dict", "model"}) {
    const PyRef* v = dict_get(*root, key);
    if (v && (*v)->kind == PyObj::Dict) { inner = v; break; }
    if (v && (*v)->kind == PyObj::Opaque)
      throw CheckpointError(fmt::format("{}: '{}' holds a pickled Python object ({}), not a state_dict", path, key, (*v)->s));
  }
  TensorMap out;
  std::vector<const PyObj*> open;
  flatten(inner ? *inner : root, "", out, order, path, open);
  if (out.empty()) throw CheckpointError(fmt::format("{} holds no tensors", path));
  return out;
}

}  // namespace detail

}  // namespace isoprompt
