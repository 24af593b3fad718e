// isoprompt: isotropic restoration of anisotropic 3D microscopy stacks.
#include <cstdio>
#include <exception>
#include <string>

#include <c10/util/Exception.h>

#include "commands.h"
#include "isoprompt/error.h"
#include "isoprompt/log.h"
#include "isoprompt/ranks.h"
#include "isoprompt/runtime.h"

namespace isoprompt::cli {

GlobalOptions& globals() {
  static GlobalOptions g;
  return g;
}

void apply_globals() {
  const auto& g = globals();
  // Under mpirun, progress and results come from rank 0.
  set_log_level(g.quiet || Ranks::rank() != 0 ? LogLevel::Warn : g.verbose ? LogLevel::Debug : LogLevel::Info);
  set_threads(g.threads);
  const std::string warn = blas_warning();
  if (!warn.empty()) log_warn("{}", warn);
}

void parse_triple(const std::string& text, const std::string& flag, double out[3]) {
  double v[3];
  char extra;
  if (std::sscanf(text.c_str(), "%lf,%lf,%lf%c", &v[0], &v[1], &v[2], &extra) != 3)
    throw_input("{} expects three comma-separated numbers z,y,x, got '{}'", flag, text);
  for (int i = 0; i < 3; ++i) {
    if (!(v[i] > 0) || v[i] > 1e9) throw_input("{} values must be positive, got '{}'", flag, text);
    out[i] = v[i];
  }
}

}  // namespace isoprompt::cli

int main(int argc, char** argv) {
  using namespace isoprompt;
  CLI::App app{"isoprompt: isotropic restoration of anisotropic 3D microscopy stacks"};
  app.set_version_flag("--version", std::string("isoprompt ") + ISOPROMPT_VERSION);
  app.require_subcommand(1);
  auto& g = cli::globals();
  // Bounded: 10^5 would try to start 10^5 threads and hang the machine.
  app.add_option("--threads", g.threads, "CPU threads (0 = all cores, at most 1024)")->check(CLI::Range(0, 1024));
  app.add_flag("-q,--quiet", g.quiet, "only warnings and errors");
  app.add_flag("-v,--verbose", g.verbose, "debug messages");
  app.add_option("--device", g.device, "torch device: cpu, cuda, cuda:N")->capture_default_str();

  cli::register_io_commands(app);
  cli::register_ops_commands(app);
  cli::register_model_commands(app);
  cli::register_tune_command(app);
  cli::register_method_commands(app);
  cli::register_demo_commands(app);
  cli::register_bank_commands(app);
  cli::register_report_command(app);

  configure_allocator();
  install_interrupt_handler();
  Ranks ranks(&argc, &argv);  // MPI when started by mpirun; one rank otherwise
  int code = 0;
  std::string message;
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    code = 2;
    message = fmt::format("error: {}\nRun with --help for usage.", e.what());
  } catch (const Cancelled&) {
    code = 130;
    message = "\ninterrupted: stopped cleanly, no partial output was written";
  } catch (const InputError& e) {
    code = 2;
    message = fmt::format("error: {}", e.what());
  } catch (const c10::Error& e) {
    code = 1;
    message = fmt::format("error: internal (torch): {}", e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    code = 1;
    message = "error: out of memory";
  } catch (const std::exception& e) {
    code = 1;
    message = fmt::format("error: {}", e.what());
  }
  if (code != 0) {
    // One failed rank fails the whole job (the others may wait for it at a barrier).
    Ranks::abort(code, message.c_str());
    std::fprintf(stderr, "%s\n", message.c_str());
    return code;
  }
  return 0;
}
