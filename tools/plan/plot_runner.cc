#include "tools/plan/plot_runner.h"

#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"

extern char** environ;

namespace shardserve::planner {

void write_plots(const nlohmann::json& plan_json, const std::filesystem::path& dir,
                 const std::filesystem::path& script, const std::string& python,
                 const std::string& format) {
  require(format == "png" || format == "svg", "plot format must be png or svg, got '{}'", format);
  require(std::filesystem::is_regular_file(script), "plot script {} not found (set --plot-script)",
          script.string());
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  require(!ec, "cannot create plot directory {}: {}", dir.string(), ec.message());
  const std::filesystem::path json_path = dir / "plan.json";
  {
    std::ofstream out(json_path);
    require(out.good(), "cannot write {}", json_path.string());
    out << plan_json.dump(2) << "\n";
  }
  // argv built from owned strings; posix_spawnp avoids a shell, so paths need no quoting.
  std::vector<std::string> args = {python, script.string(), json_path.string(), dir.string(),
                                   format};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, python.c_str(), nullptr, nullptr, argv.data(), environ);
  require(rc == 0, "cannot start {} for {}: {}", python, script.string(), std::strerror(rc));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    require(errno == EINTR, "waiting for {} failed: {}", script.string(), std::strerror(errno));
  }
  require(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "{} {} failed (exit status {}); does that interpreter have matplotlib (Debian: "
          "python3-matplotlib, for /usr/bin/python3; see --python)?",
          python, script.string(), WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

}  // namespace shardserve::planner
