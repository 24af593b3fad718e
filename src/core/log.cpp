#include "isoprompt/log.h"

#include <cstdio>
#include <mutex>

namespace isoprompt {

namespace {
LogLevel g_level = LogLevel::Info;
std::function<void(LogLevel, const std::string&)> g_sink;
std::mutex g_mutex;
}  // namespace

void set_log_level(LogLevel l) { g_level = l; }
LogLevel log_level() { return g_level; }
void set_log_sink(std::function<void(LogLevel, const std::string&)> sink) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_sink = std::move(sink);
}

void log_message(LogLevel l, const std::string& msg) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_sink) {
    g_sink(l, msg);
    return;
  }
  const char* prefix = l == LogLevel::Warn ? "warning: " : l == LogLevel::Error ? "error: " : "";
  std::fprintf(stderr, "%s%s\n", prefix, msg.c_str());
}

}  // namespace isoprompt
