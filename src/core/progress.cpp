#include "isoprompt/progress.h"

#include <unistd.h>

#include <cstdio>

#include "isoprompt/log.h"
#include "isoprompt/runtime.h"

namespace isoprompt {

Progress::Progress(std::string label, int64_t total, std::string unit, int64_t already_done)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), done_(already_done),
      already_done_(already_done) {
  tty_ = isatty(STDERR_FILENO) && log_level() <= LogLevel::Info;
  start_ = last_render_ = std::chrono::steady_clock::now();
  if (log_level() <= LogLevel::Info) render(false);
}

Progress::~Progress() {
  // A bar left mid-line (exception, Ctrl-C) gets its newline so later messages start clean.
  if (!finished_ && tty_) std::fputc('\n', stderr);
}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string Progress::format_duration(double s) {
  if (!(s >= 0) || s > 1e7) return "--:--";
  const long t = static_cast<long>(s + 0.5);
  if (t >= 3600) return fmt::format("{}:{:02}:{:02}", t / 3600, (t / 60) % 60, t % 60);
  return fmt::format("{}:{:02}", t / 60, t % 60);
}

void Progress::update(int64_t done, const std::string& status) {
  done_ = done;
  if (!status.empty()) status_ = status;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_render_).count();
  // Terminals redraw often; logs get a line every 10 s so they stay readable.
  if (log_level() <= LogLevel::Info && (since >= (tty_ ? 0.1 : 10.0) || done_ >= total_)) {
    last_render_ = now;
    render(false);
  }
  check_interrupted();
}

void Progress::finish(const std::string& status) {
  if (finished_) return;
  if (!status.empty()) status_ = status;
  done_ = total_ > 0 ? std::max(done_, total_) : done_;
  if (log_level() <= LogLevel::Info) render(true);
  finished_ = true;
}

void Progress::render(bool final_line) {
  const double t = elapsed_seconds();
  const double rate = t > 0 ? static_cast<double>(done_ - already_done_) / t : 0.0;
  const double eta = rate > 0 && total_ > 0 ? (total_ - done_) / rate : -1;
  const std::string rate_s = rate >= 1 || rate == 0 ? fmt::format("{:.1f} {}/s", rate, unit_)
                                                    : fmt::format("{:.1f} s/{}", 1.0 / rate, unit_);
  const std::string when = final_line ? fmt::format("in {}", format_duration(t))
                                      : fmt::format("{} elapsed, ETA {}", format_duration(t), format_duration(eta));
  const std::string tail = status_.empty() ? "" : "  " + status_;
  if (tty_) {
    const int width = 24;
    const double frac = total_ > 0 ? std::min(1.0, double(done_) / double(total_)) : 0.0;
    const int filled = static_cast<int>(frac * width);
    std::string bar(filled, '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r\033[K%s [%s] %3d%% %lld/%lld %s, %s%s", label_.c_str(), bar.c_str(),
                 static_cast<int>(frac * 100), static_cast<long long>(done_),
                 static_cast<long long>(total_), rate_s.c_str(), when.c_str(), tail.c_str());
    if (final_line) std::fputc('\n', stderr);
    std::fflush(stderr);
  } else {
    log_message(LogLevel::Info, fmt::format("{}: {}/{} {}, {}, {}{}", label_, done_, total_, unit_,
                                            rate_s, when, tail));
  }
}

}  // namespace isoprompt
