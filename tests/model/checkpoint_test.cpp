// Checkpoint readers: safetensors, torch.save zips (built here with LibTorch's zip writer and a
// hand-assembled pickle), key normalisation, strictness and corrupted files.
#include <caffe2/serialize/inline_container.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "isoprompt/checkpoint.h"
#include "isoprompt/error.h"
#include "isoprompt/model.h"
#include "test_util.h"

namespace isoprompt {
namespace {

using ::testing::HasSubstr;

// --- a minimal pickle writer, emitting what torch.save (protocol 2) emits -----------------
struct Pickle {
  std::string b = "\x80\x02";
  int memo = 0;
  Pickle& op(char c) { b += c; return *this; }
  Pickle& str(const std::string& s) {
    b += 'X';
    for (int i = 0; i < 4; ++i) b += char((s.size() >> (8 * i)) & 0xff);
    b += s;
    return put();
  }
  Pickle& integer(int32_t v) {
    b += 'J';
    for (int i = 0; i < 4; ++i) b += char((uint32_t(v) >> (8 * i)) & 0xff);
    return *this;
  }
  Pickle& global(const std::string& mod, const std::string& name) {
    b += 'c' + mod + "\n" + name + "\n";
    return put();
  }
  Pickle& put() {  // BINPUT, as the Python pickler memoizes most objects
    b += 'q';
    b += char(memo++ & 0xff);
    return *this;
  }
  Pickle& tuple(const std::vector<int64_t>& v) {
    op('(');
    for (int64_t x : v) integer(int32_t(x));
    return op('t');
  }
  Pickle& ordered_dict() { global("collections", "OrderedDict"); op(')'); return op('R'); }
  // _rebuild_tensor_v2(persid(('storage', FloatStorage, key, 'cpu', numel)), offset, size, stride, False, OrderedDict())
  Pickle& tensor(const std::string& key, int64_t numel, int64_t offset, const std::vector<int64_t>& size,
                 const std::vector<int64_t>& stride, const std::string& storage = "FloatStorage") {
    global("torch._utils", "_rebuild_tensor_v2");
    op('(');
    op('(').str("storage").global("torch", storage).str(key).str("cpu").integer(int32_t(numel)).op('t').op('Q');
    integer(int32_t(offset)).tuple(size).tuple(stride).op('\x89');
    ordered_dict();
    return op('t').op('R');
  }
};

void write_zip(const std::string& path, const std::string& pkl, const std::map<std::string, at::Tensor>& storages) {
  caffe2::serialize::PyTorchStreamWriter w(path);
  w.writeRecord("data.pkl", pkl.data(), pkl.size());
  for (const auto& [key, t] : storages) w.writeRecord("data/" + key, t.data_ptr(), t.numel() * t.element_size());
  const std::string version = "3\n";
  w.writeRecord("version", version.data(), version.size());
  w.writeEndOfFile();
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const CheckpointError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("wrong exception type: ") + e.what();
  }
  return "no error";
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";  // 56 bytes: two blocks
  EXPECT_EQ(sha256_hex(two.data(), two.size()), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  EXPECT_EQ(sha256_hex(million.data(), million.size()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Safetensors, RoundTripKeepsDtypesOrderAndMetadata) {
  test::TempDir tmp;
  TensorList in = {{"z.f32", at::arange(6, at::kFloat).view({2, 3})},
                   {"a.i64", at::tensor({-5, 7}, at::kLong)},
                   {"m.f16", at::tensor({0.5, -2.0}).to(at::kHalf)},
                   {"b.bool", at::tensor({1, 0, 1}).to(at::kBool)},
                   {"e.empty", at::empty({0, 4})},
                   {"s.scalar", at::full({}, 3.25)}};
  write_safetensors(tmp.file("t.safetensors"), in, {{"config", "{}"}, {"who", "me"}});
  std::map<std::string, std::string> md;
  std::vector<std::string> order;
  TensorMap out = read_safetensors(tmp.file("t.safetensors"), &md, &order);
  ASSERT_EQ(out.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(order[i], in[i].first);
    const at::Tensor& t = out.at(in[i].first);
    EXPECT_EQ(t.scalar_type(), in[i].second.scalar_type());
    EXPECT_EQ(t.sizes(), in[i].second.sizes());
    EXPECT_TRUE(at::equal(t, in[i].second)) << in[i].first;
  }
  EXPECT_EQ(md.at("who"), "me");
  // Header length is a multiple of 8 and the data follow it exactly (6 + 2*8 + 2*2 + 3 + 0 + 4 bytes).
  const std::string bytes = read_bytes(tmp.file("t.safetensors"));
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + n + 6 * 4 + 16 + 4 + 3 + 0 + 4);
}

TEST(Safetensors, TruncatedAndMalformed) {
  test::TempDir tmp;
  write_safetensors(tmp.file("t.safetensors"), {{"w", at::ones({4, 4})}}, {});
  const std::string bytes = read_bytes(tmp.file("t.safetensors"));
  write_bytes(tmp.file("cut.safetensors"), bytes.substr(0, bytes.size() - 5));
  EXPECT_THAT(error_of([&] { read_safetensors(tmp.file("cut.safetensors")); }),
              HasSubstr("is truncated: tensor 'w' ends at byte 64 of the data but only 59 bytes are present"));
  write_bytes(tmp.file("head.safetensors"), bytes.substr(0, 20));
  EXPECT_THAT(error_of([&] { read_safetensors(tmp.file("head.safetensors")); }), HasSubstr("exceeds file size 20"));
  write_bytes(tmp.file("tiny.safetensors"), "abc");
  EXPECT_THAT(error_of([&] { read_safetensors(tmp.file("tiny.safetensors")); }), HasSubstr("is truncated: 3 bytes"));
  EXPECT_THAT(error_of([&] { read_safetensors(tmp.file("missing.safetensors")); }), HasSubstr("not found"));
}

// A synthetic torch.save file: {'params': OrderedDict(a: 2x3 view at offset 1 of storage 0,
// b: int64 (2,), c: transposed 2x2 view of the same storage 0)}.
TEST(TorchCheckpoint, ReadsWrappedStateDictWithViewsAndSharedStorage) {
  test::TempDir tmp;
  at::Tensor s0 = at::arange(10, at::kFloat);
  at::Tensor s1 = at::tensor(std::vector<int64_t>{-3, int64_t(1) << 40});
  Pickle p;
  p.op('}').put().str("params").ordered_dict().op('(');
  p.str("a").tensor("0", 10, 1, {2, 3}, {3, 1});
  p.str("b").tensor("1", 2, 0, {2}, {1}, "LongStorage");
  p.str("c").tensor("0", 10, 0, {2, 2}, {1, 2});
  p.op('u').op('s').op('.');
  write_zip(tmp.file("w.pt"), p.b, {{"0", s0}, {"1", s1}});
  std::vector<std::string> order;
  TensorMap m = read_torch_checkpoint(tmp.file("w.pt"), &order);
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(order, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(at::equal(m.at("a"), at::arange(1, 7, at::kFloat).view({2, 3})));
  EXPECT_EQ(m.at("b").scalar_type(), at::kLong);
  EXPECT_EQ(m.at("b")[1].item<int64_t>(), 1LL << 40);
  EXPECT_TRUE(at::equal(m.at("c"), at::tensor({0.f, 2.f, 1.f, 3.f}).view({2, 2})));
  // read_tensor_file picks the torch reader by content, whatever the extension.
  std::filesystem::copy_file(tmp.file("w.pt"), tmp.file("w.bin"));
  EXPECT_EQ(read_tensor_file(tmp.file("w.bin")).size(), 3u);
}

TEST(TorchCheckpoint, ClearErrorsForUnsupportedFiles) {
  test::TempDir tmp;
  // Pickled whole module: NEWOBJ of __main__.Net.
  Pickle mod;
  mod.global("__main__", "Net").op(')').op('\x81').op('}').op('b').op('.');
  write_zip(tmp.file("module.pt"), mod.b, {});
  EXPECT_THAT(error_of([&] { read_torch_checkpoint(tmp.file("module.pt")); }),
              HasSubstr("holds a pickled Python object (__main__.Net), not a state_dict"));
  // Legacy (pre-1.6) format starts with a raw pickle.
  write_bytes(tmp.file("legacy.pt"), std::string("\x80\x02\x8a\x0a" "l\xfc\x9c" "F\xf9 j\xa8P\x19.", 16));
  EXPECT_THAT(error_of([&] { read_torch_checkpoint(tmp.file("legacy.pt")); }), HasSubstr("legacy (pre-1.6, non-zip)"));
  write_bytes(tmp.file("text.pt"), "hello world");
  EXPECT_THAT(error_of([&] { read_tensor_file(tmp.file("text.pt")); }),
              HasSubstr("is neither a torch.save zip checkpoint (.pt/.pth) nor a .safetensors file"));
  // A dict without tensors.
  Pickle empty;
  empty.op('}').put().str("epoch").integer(3).op('s').op('.');
  write_zip(tmp.file("empty.pt"), empty.b, {});
  EXPECT_THAT(error_of([&] { read_torch_checkpoint(tmp.file("empty.pt")); }), HasSubstr("holds no tensors"));
  // Unknown opcode (PERSID 'P', text protocol) and a storage record that is missing.
  Pickle bad;
  bad.op('P');
  write_zip(tmp.file("bad.pt"), bad.b, {});
  EXPECT_THAT(error_of([&] { read_torch_checkpoint(tmp.file("bad.pt")); }), HasSubstr("unsupported pickle opcode 0x50"));
  Pickle nostore;
  nostore.ordered_dict().str("w").tensor("7", 4, 0, {4}, {1}).op('s').op('.');
  write_zip(tmp.file("nostore.pt"), nostore.b, {});
  EXPECT_THAT(error_of([&] { read_torch_checkpoint(tmp.file("nostore.pt")); }), HasSubstr("storage record data/7 is missing"));
}

TEST(KeyNormalisation, ModulePrefixAndUniModelRenames) {
  const at::Tensor t = at::zeros({1});
  TensorMap dp = {{"module.conv_first.weight", t}, {"module.layers.0.conv.bias", t}};
  TensorMap n = normalize_state_dict_keys(dp);
  EXPECT_EQ(n.size(), 2u);
  EXPECT_TRUE(n.count("conv_first.weight") && n.count("layers.0.conv.bias"));
  // A "module." on only some keys is left alone (that is a real module name, not DataParallel).
  TensorMap mixed = {{"module.x", t}, {"conv_first.weight", t}};
  EXPECT_TRUE(normalize_state_dict_keys(mixed).count("module.x"));
  TensorMap uni = {{"module.conv_firstiso.weight", t}, {"module.conv_before_upsample0.0.bias", t},
                   {"module.conv_last0.weight", t},    {"module.conv_firstsr.weight", t},
                   {"module.project.body.0.weight", t}, {"module.conv_lastv.bias", t},
                   {"module.upsamplesr.0.weight", t},  {"module.layers.1.conv.weight", t},
                   {"module.conv_first0.down.weight", t}};
  n = normalize_state_dict_keys(uni);
  std::vector<std::string> keys;
  for (const auto& kv : n) keys.push_back(kv.first);
  EXPECT_EQ(keys, (std::vector<std::string>{"conv_before_upsample.0.bias", "conv_first.weight", "conv_last.weight",
                                            "layers.1.conv.weight"}));
  // Without conv_firstiso the file is a plain swinir one: nothing is renamed or dropped.
  TensorMap plain = {{"conv_first.weight", t}, {"conv_last0.weight", t}};
  EXPECT_TRUE(normalize_state_dict_keys(plain).count("conv_last0.weight"));
}

// --- strict loading of corrupted checkpoints, built from the tiny golden model ------------------

struct TinyFiles {
  TensorMap sd;
  std::vector<std::string> order;
  TensorList list() const {
    TensorList l;
    for (const auto& k : order) l.emplace_back(k, sd.at(k));
    return l;
  }
};

TinyFiles tiny(const std::string& dir) {
  TinyFiles f;
  f.sd = read_torch_checkpoint(dir + "/model.pt", &f.order);
  return f;
}

TEST(StrictLoading, CorruptedCheckpointsEachFailWithTheirOwnMessage) {
  ISO_REQUIRE_SHARED(dir, "golden/unifmir/iso_tiny");
  test::TempDir tmp;
  TinyFiles t = tiny(dir);
  const std::string qkv = "layers.1.residual_group.blocks.0.attn.qkv.weight";

  // Missing key.
  TensorList l = t.list();
  l.erase(std::find_if(l.begin(), l.end(), [&](const auto& kv) { return kv.first == qkv; }));
  write_safetensors(tmp.file("missing.safetensors"), l, {});
  EXPECT_THAT(error_of([&] { load_backbone(tmp.file("missing.safetensors")); }),
              HasSubstr("missing tensor '" + qkv + "' (expected shape [36, 12]) in " + tmp.file("missing.safetensors")));

  // Extra key.
  l = t.list();
  l.emplace_back("layers.1.residual_group.blocks.0.attn.extra", at::zeros({3, 5}));
  write_safetensors(tmp.file("extra.safetensors"), l, {});
  EXPECT_THAT(error_of([&] { load_backbone(tmp.file("extra.safetensors")); }),
              HasSubstr("unknown tensor 'layers.1.residual_group.blocks.0.attn.extra' (shape [3, 5]) in " +
                        tmp.file("extra.safetensors")));

  // Wrong shape.
  l = t.list();
  for (auto& kv : l)
    if (kv.first == qkv) kv.second = at::zeros({36, 13});
  write_safetensors(tmp.file("shape.safetensors"), l, {});
  EXPECT_THAT(error_of([&] { load_backbone(tmp.file("shape.safetensors")); }),
              HasSubstr("tensor '" + qkv + "' in " + tmp.file("shape.safetensors") + " has shape [36, 13], but the model"));
  EXPECT_THAT(error_of([&] { load_backbone(tmp.file("shape.safetensors")); }), HasSubstr("expects [36, 12]"));

  // A buffer that differs from the recomputed one.
  l = t.list();
  const std::string idx = "layers.0.residual_group.blocks.1.attn.relative_position_index";
  for (auto& kv : l)
    if (kv.first == idx) kv.second = kv.second.t().contiguous();
  write_safetensors(tmp.file("buffer.safetensors"), l, {});
  EXPECT_THAT(error_of([&] { load_backbone(tmp.file("buffer.safetensors")); }),
              HasSubstr("buffer '" + idx + "' in " + tmp.file("buffer.safetensors") + " differs from the one this model computes"));

  // Truncated .pt and truncated .safetensors.
  const std::string pt = read_bytes(dir + "/model.pt");
  write_bytes(tmp.file("cut.pt"), pt.substr(0, pt.size() / 2));
  EXPECT_THAT(error_of([&] { load_backbone(tmp.file("cut.pt")); }),
              HasSubstr(tmp.file("cut.pt") + " is truncated or not a valid zip archive"));
  const std::string st = read_bytes(dir + "/model.safetensors");
  write_bytes(tmp.file("cut.safetensors"), st.substr(0, st.size() - 100));
  EXPECT_THAT(error_of([&] { load_backbone(tmp.file("cut.safetensors")); }),
              HasSubstr(tmp.file("cut.safetensors") + " is truncated: tensor"));

  // Buffers may be absent (they are recomputed): parameters only loads and gives the same identity.
  l.clear();
  for (const auto& k : t.order)
    if (k.find("relative_position_index") == std::string::npos && k.find("attn_mask") == std::string::npos)
      l.emplace_back(k, t.sd.at(k));
  EXPECT_EQ(l.size(), 74u - 4 - 2);
  write_safetensors(tmp.file("params.safetensors"), l, {});
  EXPECT_EQ(load_backbone(tmp.file("params.safetensors")).hash, load_backbone(dir + "/model.pt").hash);
}

TEST(StrictLoading, WrappersPrefixesAndRenamesLoadTheTinyModel) {
  ISO_REQUIRE_SHARED(dir, "golden/unifmir/iso_tiny");
  test::TempDir tmp;
  TinyFiles t = tiny(dir);
  // Re-save the golden tensors as {'params_ema': {'module.<UniModel name>': ...}, 'epoch': 3}.
  std::map<std::string, at::Tensor> storages;
  Pickle p;
  p.op('}').put().op('(').str("epoch").integer(3).str("params_ema").ordered_dict().op('(');
  int i = 0;
  for (const auto& k : t.order) {
    std::string key = k;
    for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
             {"conv_first.", "conv_firstiso."}, {"conv_before_upsample.", "conv_before_upsample0."}, {"conv_last.", "conv_last0."}})
      if (key.rfind(from, 0) == 0) key = to + key.substr(from.size());
    const at::Tensor& v = t.sd.at(k);
    const std::string sk = std::to_string(i++);
    storages[sk] = v.contiguous();
    std::vector<int64_t> stride = v.contiguous().strides().vec();
    p.str("module." + key).tensor(sk, v.numel(), 0, v.sizes().vec(), stride,
                                  v.scalar_type() == at::kLong ? "LongStorage" : "FloatStorage");
  }
  // Another UniModel task's head, which must be ignored.
  storages["x"] = at::zeros({90});
  p.str("module.conv_firstsr.bias").tensor("x", 90, 0, {90}, {1});
  p.op('u').op('u').op('.');
  write_zip(tmp.file("unimodel.pth"), p.b, storages);
  Backbone a = load_backbone(tmp.file("unimodel.pth"));
  Backbone b = load_backbone(dir + "/model.safetensors");
  EXPECT_EQ(a.config, b.config);
  EXPECT_EQ(a.hash, b.hash);
  EXPECT_EQ(a.name, "unimodel");
}

TEST(ModelFiles, SaveBackboneRoundTripsConfigWeightsAndMetadata) {
  test::TempDir tmp;
  SwinConfig c;
  c.embed_dim = 6;
  c.depths = {1, 2};
  c.num_heads = {2, 3};
  c.window_size = 4;
  c.mlp_ratio = 1.5;
  c.num_feat = 5;
  c.img_size = 16;
  SwinIR net(c);
  save_backbone(tmp.file("m.safetensors"), net, {{"note", "hello"}});
  Backbone bb = load_backbone(tmp.file("m.safetensors"));
  EXPECT_EQ(bb.config, c);
  EXPECT_EQ(bb.metadata.at("note"), "hello");
  EXPECT_EQ(SwinConfig::from_json(bb.metadata.at("config")), c);
  TensorMap params;
  for (const auto& [k, v] : net->weights()) params.emplace(k, v);
  EXPECT_EQ(bb.hash, weights_hash(params));
  at::Tensor x = at::rand({2, 1, 12, 9});
  torch::NoGradGuard ng;
  EXPECT_TRUE(at::equal(bb.net->forward(x), net->forward(x)));
  // Without the config metadata the same shapes are inferred (window from the bias table,
  // img_size from the attn_mask window count, mlp ratio from fc1, num_feat from conv_before_upsample).
  std::vector<std::string> order;
  TensorMap sd = read_safetensors(tmp.file("m.safetensors"), nullptr, &order);
  EXPECT_EQ(infer_config(sd, "m"), c);
  TensorList l;
  for (const auto& k : order) l.emplace_back(k, sd.at(k));
  write_safetensors(tmp.file("bare.safetensors"), l, {});
  EXPECT_EQ(load_backbone(tmp.file("bare.safetensors")).config, c);
  EXPECT_EQ(load_backbone(tmp.file("bare.safetensors")).hash, bb.hash);
  // Not a SwinIR file at all.
  write_safetensors(tmp.file("other.safetensors"), {{"fc.weight", at::zeros({2, 2})}}, {});
  EXPECT_THAT(error_of([&] { load_backbone(tmp.file("other.safetensors")); }),
              HasSubstr("is not a SwinIR/UniFMIR checkpoint: tensor 'conv_first.weight' is missing (it has 1 tensors: fc.weight)"));
}

}  // namespace
}  // namespace isoprompt
