// Internal: a pickle VM for the subset of protocol 2-5 that torch.save writes.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace isoprompt::detail {

struct PyObj;
using PyRef = std::shared_ptr<PyObj>;

struct PyObj {
  enum Kind { None, Bool, Int, Float, Str, Tuple, List, Dict, Global, Tensor, Opaque } kind = None;
  int64_t i = 0;
  double f = 0;
  std::string s;  // Str value, Global "module.name", Opaque class name
  std::vector<PyRef> items;                      // Tuple, List
  std::vector<std::pair<PyRef, PyRef>> dict;     // Dict, insertion order (OrderedDict -> Dict)
  std::unordered_map<std::string, size_t> str_index;  // Dict: string key -> position in `dict`
  at::Tensor tensor;                             // Tensor (storages are 1-D tensors)
};

// The object graph a pickle builds can be cyclic (a dict that holds itself) or millions of
// levels deep, so the Unpickler owns every object it makes and its destructor unlinks them
// one by one: the graph is never freed by recursion. The object run() returns is valid
// while the Unpickler lives.
class Unpickler {
 public:
  // Loads storage `key` of `numel` elements of type `dt` (called once per key).
  using StorageLoader = std::function<at::Tensor(const std::string& key, at::ScalarType dt, int64_t numel)>;
  Unpickler(const std::string& bytes, std::string source, StorageLoader loader);
  ~Unpickler();
  Unpickler(const Unpickler&) = delete;
  Unpickler& operator=(const Unpickler&) = delete;
  PyRef run();  // throws CheckpointError

 private:
  PyRef make(PyObj::Kind k);
  PyRef call(const PyRef& fn, const std::vector<PyRef>& args, int depth);
  [[noreturn]] void fail(const std::string& what) const;
  const char* take(size_t n);
  uint64_t read_le(size_t n);
  std::string read_line();
  PyRef pop();
  PyRef& top();
  std::vector<PyRef> pop_mark();
  void memo_put(uint64_t i);
  PyRef memo_get(uint64_t i);

  const std::string& p_;
  size_t pos_ = 0;
  std::string src_;
  StorageLoader load_storage_;
  std::vector<PyRef> stack_;
  std::vector<size_t> marks_;
  std::vector<PyRef> memo_;
  std::map<std::string, at::Tensor> storages_;
  std::vector<PyRef> objects_;  // everything make() returned, for the non-recursive teardown
};

// The state_dict a torch.save pickle (data.pkl) holds, flattened to "a.b.c" names, as
// read_torch_checkpoint returns it; storages come from `loader`. Throws CheckpointError
// naming `source`. Separate from the zip reading so the pickle can be tested (and fuzzed)
// from bytes in memory.
std::map<std::string, at::Tensor> state_dict_from_pickle(const std::string& pickle,
                                                         const std::string& source,
                                                         const Unpickler::StorageLoader& loader,
                                                         std::vector<std::string>* order = nullptr);

}  // namespace isoprompt::detail
