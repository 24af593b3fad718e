// isoprompt model info | convert | apply
#include <cstdio>
#include <filesystem>

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "common_args.h"
#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/log.h"
#include "isoprompt/model.h"
#include "isoprompt/io.h"

namespace isoprompt::cli {

namespace {

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return "[" + s + "]";
}

std::string thousands(int64_t n) {
  std::string s = std::to_string(n), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

void model_info(const std::string& path, bool json) {
  apply_globals();
  Backbone bb = load_backbone(path);
  const SwinConfig& c = bb.config;
  const double gf = c.gflops(256, 256);
  if (json) {
    nlohmann::ordered_json j;
    j["file"] = path;
    j["config"] = nlohmann::json::parse(c.to_json());
    j["parameters"] = c.parameter_count();
    j["gflop_per_256x256_slice"] = gf;
    j["identity"] = bb.hash;
    j["metadata"] = bb.metadata;
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("file        %s\n", path.c_str());
  std::printf("format      %s\n", lowercase_extension(path) == ".safetensors" ? "safetensors" : "torch.save zip (.pt/.pth)");
  std::printf("model       SwinIR (UniFMIR isotropic layout), %zu stages, %lld blocks\n", c.depths.size(),
              static_cast<long long>(c.num_blocks()));
  std::printf("embed_dim   %lld\n", static_cast<long long>(c.embed_dim));
  std::printf("depths      %s\n", join(c.depths).c_str());
  std::printf("num_heads   %s\n", join(c.num_heads).c_str());
  std::printf("window      %lld (shift %lld on odd blocks)\n", static_cast<long long>(c.window_size),
              static_cast<long long>(c.window_size / 2));
  std::printf("mlp         ratio %g (hidden %lld)\n", c.mlp_ratio, static_cast<long long>(c.mlp_hidden()));
  std::printf("num_feat    %lld\n", static_cast<long long>(c.num_feat));
  std::printf("in_chans    %lld\n", static_cast<long long>(c.in_chans));
  std::printf("parameters  %s\n", thousands(c.parameter_count()).c_str());
  std::printf("FLOPs       %.1f GFLOP per 256x256 slice\n", gf);
  std::printf("identity    %s\n", bb.hash.c_str());
  std::printf("config      %s\n", c.to_json().c_str());
  for (const auto& [k, v] : bb.metadata)
    if (k != "config" || v.empty() || v[0] != '{') std::printf("metadata    %s = %s\n", k.c_str(), v.c_str());
}

void model_convert(const std::string& in, const std::string& out) {
  apply_globals();
  if (lowercase_extension(out) != ".safetensors")
    throw_input("output must be a .safetensors file, got {}", out);
  check_output_path(out, {in});
  Backbone bb = load_backbone(in);
  std::map<std::string, std::string> md = bb.metadata;
  md.erase("config");
  md["source"] = std::filesystem::path(in).filename().string();
  save_backbone(out, bb.net, md);
  log_info("wrote {} ({} parameters, identity {})", out, thousands(bb.config.parameter_count()), bb.hash.substr(0, 16));
}

void model_apply(const std::string& model, const std::string& in, const std::string& out, const std::string& plane,
                 int64_t batch) {
  apply_globals();
  const Plane p = parse_plane(plane);
  check_output_path(out, {in, model});
  Backbone bb = load_backbone(model, parse_device(globals().device));
  // A 2D model applied to a 2D image is the most natural use: single planes are accepted.
  ReadOptions ro;
  ro.allow_2d = true;
  Volume v = read_volume(in, ro);
  if (v.nz() == 1 && p != Plane::XY)
    throw_input("{} is a 2D image (one plane): it has no {} planes, use --plane xy", in, plane_name(p));
  log_info("{}: {} planes of {} through {} ({:.1f} GFLOP each)", in, v.plane_count(p), plane_name(p), bb.name,
           bb.config.gflops(p == Plane::XY ? v.ny() : v.nz(), p == Plane::YZ ? v.ny() : v.nx()));
  Volume r = apply_planewise(bb.net, v, p, batch);
  write_volume(out, r);
  log_info("wrote {}", out);
}

}  // namespace

void register_model_commands(CLI::App& app) {
  auto* model = app.add_subcommand("model", "inspect, convert and apply SwinIR/UniFMIR backbone files");
  model->require_subcommand(1);

  auto* info = model->add_subcommand("info", "print a model file's configuration, size, FLOPs and identity");
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  info->add_option("FILE", *path, "model file (.safetensors, .pt, .pth)")->required();
  info->add_flag("--json", *json, "print JSON instead of text");
  info->callback([path, json] { model_info(*path, *json); });

  auto* conv = model->add_subcommand("convert", "convert a checkpoint (.pt/.pth/.safetensors) to an isoprompt .safetensors");
  auto in = std::make_shared<std::string>(), out = std::make_shared<std::string>();
  conv->add_option("IN", *in, "input checkpoint")->required();
  conv->add_option("OUT", *out, "output .safetensors")->required();
  conv->callback([in, out] { model_convert(*in, *out); });

  auto* apply = model->add_subcommand("apply", "apply the raw network to every plane of a stack or to a 2D image (float32 output)");
  auto mfile = std::make_shared<std::string>(), tif = std::make_shared<std::string>(),
       otif = std::make_shared<std::string>(), plane = std::make_shared<std::string>("xy");
  auto batch = std::make_shared<int64_t>(4);
  apply->add_option("FILE", *mfile, "model file")->required();
  apply->add_option("IN", *tif, "input TIFF stack or 2D image")->required();
  apply->add_option("-o,--output", *otif, "output TIFF (float32)")->required();
  apply->add_option("--plane", *plane, "planes to process: xy, xz or yz")->capture_default_str();
  apply->add_option("--batch", *batch, "planes per forward call")->capture_default_str()->check(CLI::PositiveNumber);
  apply->callback([mfile, tif, otif, plane, batch] { model_apply(*mfile, *tif, *otif, *plane, *batch); });
}

}  // namespace isoprompt::cli
