// SPDX-License-Identifier: MIT
// A child process for tests that run a real program (the L4 proxy, HAProxy): fork + execv
// with stdout and stderr on pipes that a thread drains into buffers (so a chatty child never
// blocks on a full pipe), a line reader with a timeout, signals, a bounded wait for the exit,
// and a destructor that kills (SIGKILL, by pid) and reaps a child still running, so that no
// test, passing or failing, leaves a process behind.
//
// The child gets only the descriptors it is given: stdin from /dev/null, stdout and stderr on
// the pipes, the `pass_fds` as 3, 4, ... and nothing else, whatever the test process holds
// open. It also gets SIGKILL if the thread that started it dies (PR_SET_PDEATHSIG), which
// covers a test process that crashes; start children from a thread that outlives them (the
// test's own thread does).
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace lbkit::test {

// How a child ended: exited with a code, or killed by a signal.
struct exit_status {
  bool exited = false;  // true: `code` holds the exit code; false: `signal` the signal
  int code = 0;
  int signal = 0;
  bool success() const noexcept { return exited && code == 0; }
  std::string to_string() const {
    return exited ? "exit code " + std::to_string(code) : "signal " + std::to_string(signal);
  }
};

// Thread safety: not thread-safe (one test thread drives it); the output buffers are
// guarded internally against the reader thread.
class child_process {
 public:
  // Starts argv[0] (a path, not looked up in PATH) with these arguments. `pass_fds` become the
  // child's descriptors 3, 4, ... in order. started() tells whether execv succeeded, and
  // start_error() why not.
  explicit child_process(const std::vector<std::string>& argv,
                         const std::vector<int>& pass_fds = {}) {
    int out[2] = {-1, -1}, err[2] = {-1, -1}, exec_report[2] = {-1, -1};
    if (argv.empty() || ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0 ||
        ::pipe2(exec_report, O_CLOEXEC) != 0) {
      error_ = argv.empty() ? "no program" : "pipe: " + std::string(std::strerror(errno));
      for (int fd : {out[0], out[1], err[0], err[1], exec_report[0], exec_report[1]}) {
        if (fd >= 0) ::close(fd);
      }
      return;
    }
    // Everything the child needs is built before fork: after it, only async-signal-safe calls.
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    const pid_t parent = ::getpid();

    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);  // the parent died before prctl
      // Move the execv report and the passed descriptors out of the way of 0..2+n first, then
      // the passed ones into place (dup2 clears close-on-exec on the copies).
      const int report = ::fcntl(exec_report[1], F_DUPFD_CLOEXEC, 64);
      int moved[16];
      const unsigned n = pass_fds.size() < 16 ? static_cast<unsigned>(pass_fds.size()) : 16;
      for (unsigned i = 0; i < n; ++i) moved[i] = ::fcntl(pass_fds[i], F_DUPFD_CLOEXEC, 64);
      if (devnull >= 0) ::dup2(devnull, 0);
      ::dup2(out[1], 1);
      ::dup2(err[1], 2);
      for (unsigned i = 0; i < n; ++i) ::dup2(moved[i], 3 + static_cast<int>(i));
      // Close everything else but the report pipe, close-on-exec or not.
      const auto first = 3 + n, keep = static_cast<unsigned>(report);
      if (::syscall(SYS_close_range, first, keep - 1, 0) != 0 ||
          ::syscall(SYS_close_range, keep + 1, ~0u, 0) != 0) {
        for (unsigned fd = first; fd < 4096; ++fd) {
          if (fd != keep) ::close(static_cast<int>(fd));
        }
      }
      // Signals: default dispositions and nothing blocked, whatever the test process set.
      struct sigaction dfl {};
      dfl.sa_handler = SIG_DFL;
      for (int s = 1; s < NSIG; ++s) ::sigaction(s, &dfl, nullptr);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::execv(args[0], args.data());
      const int e = errno;
      [[maybe_unused]] auto w = ::write(report, &e, sizeof e);
      ::_exit(127);
    }
    if (devnull >= 0) ::close(devnull);
    ::close(out[1]);
    ::close(err[1]);
    ::close(exec_report[1]);
    if (pid_ < 0) {
      error_ = "fork: " + std::string(std::strerror(errno));
      ::close(out[0]);
      ::close(err[0]);
      ::close(exec_report[0]);
      return;
    }
    // The report pipe closes on a successful exec (close-on-exec) or carries execv's errno.
    int e = 0;
    ssize_t got;
    do {
      got = ::read(exec_report[0], &e, sizeof e);
    } while (got < 0 && errno == EINTR);
    ::close(exec_report[0]);
    if (got == sizeof e) error_ = "execv " + argv[0] + ": " + std::strerror(e);
    out_fd_ = out[0];
    err_fd_ = err[0];
    reader_ = std::thread([this] { drain(); });
  }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process() {
    kill();
    stop_.store(true, std::memory_order_release);
    if (reader_.joinable()) reader_.join();
    if (out_fd_ >= 0) ::close(out_fd_);
    if (err_fd_ >= 0) ::close(err_fd_);
  }

  bool started() const noexcept { return pid_ > 0 && error_.empty(); }
  const std::string& start_error() const noexcept { return error_; }
  pid_t pid() const noexcept { return pid_; }
  bool running() const noexcept { return pid_ > 0 && !status_; }

  // The next line of stdout without its newline, waiting up to `timeout` for it; empty when
  // none came (the child may have ended: see running()).
  std::optional<std::string> read_line(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    const bool ok = cv_.wait_for(lock, timeout, [&] {
      return out_.find('\n', out_read_) != std::string::npos || out_closed_;
    });
    const auto nl = out_.find('\n', out_read_);
    if (!ok || nl == std::string::npos) return std::nullopt;
    std::string line = out_.substr(out_read_, nl - out_read_);
    out_read_ = nl + 1;
    return line;
  }
  // Everything the child wrote so far.
  std::string stdout_text() const {
    std::lock_guard lock(mu_);
    return out_;
  }
  std::string stderr_text() const {
    std::lock_guard lock(mu_);
    return err_;
  }
  // Waits up to `timeout` until both output pipes are closed (the child and everything that
  // inherited them ended), so that the *_text() calls see all of it.
  bool wait_output_closed(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return out_closed_ && err_closed_; });
  }

  // Sends `sig` to the child if it has not been reaped (so the pid is still its own).
  bool signal(int sig) { return running() && ::kill(pid_, sig) == 0; }

  // Waits up to `timeout` for the child to end, and reaps it. Empty if it is still running.
  std::optional<exit_status> wait_exit(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) return std::nullopt;
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (!status_) {
      int st = 0;
      const pid_t r = ::waitpid(pid_, &st, WNOHANG);
      if (r == pid_) {
        exit_status s;
        s.exited = WIFEXITED(st);
        s.code = s.exited ? WEXITSTATUS(st) : 0;
        s.signal = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
        status_ = s;
        break;
      }
      if (r < 0 && errno != EINTR) break;  // not our child any more: nothing to wait for
      if (std::chrono::steady_clock::now() >= until) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return status_;
  }

  // Kills the child (SIGKILL) if it is still running and reaps it.
  void kill() {
    if (!running()) return;
    ::kill(pid_, SIGKILL);
    wait_exit(std::chrono::seconds(10));
  }

 private:
  void drain() {
    bool out_open = true, err_open = true;
    char buf[4096];
    while ((out_open || err_open) && !stop_.load(std::memory_order_acquire)) {
      pollfd p[2] = {{out_open ? out_fd_ : -1, POLLIN, 0}, {err_open ? err_fd_ : -1, POLLIN, 0}};
      if (::poll(p, 2, 20) <= 0) continue;
      for (int i = 0; i < 2; ++i) {
        if (p[i].revents == 0) continue;
        const ssize_t n = ::read(i == 0 ? out_fd_ : err_fd_, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        std::lock_guard lock(mu_);
        if (n > 0) {
          (i == 0 ? out_ : err_).append(buf, static_cast<std::size_t>(n));
        } else {
          (i == 0 ? out_open : err_open) = false;
          (i == 0 ? out_closed_ : err_closed_) = true;
        }
        cv_.notify_all();
      }
    }
  }

  pid_t pid_ = -1;
  std::string error_;
  std::optional<exit_status> status_;
  int out_fd_ = -1, err_fd_ = -1;
  std::thread reader_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string out_, err_;  // guarded by mu_
  std::size_t out_read_ = 0;
  bool out_closed_ = false, err_closed_ = false;
};

}  // namespace lbkit::test
