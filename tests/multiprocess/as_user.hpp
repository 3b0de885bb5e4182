// Code run as another user: the access tests (run as root, as CI does) check what other uids may do.
#pragma once

#include <doctest/doctest.h>

#include <csignal>
#include <functional>
#include <string>
#include <vector>

#include <grp.h>
#include <sys/wait.h>
#include <unistd.h>

namespace rvoip::events::test {

struct Outcome {
    std::string said;
    int exit_code = -1;
    int signal = 0;
};

// Runs `body` in a child process as `uid` (primary group `gid`, no supplementary groups but `extra`).
// Returns what the child wrote to its pipe, and how it ended.
inline Outcome as_user(uid_t uid, gid_t gid, std::vector<gid_t> extra, const std::function<std::string()>& body) {
    int p[2];
    REQUIRE(::pipe(p) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::close(p[0]);
        for (int sig : {SIGSEGV, SIGBUS, SIGABRT}) ::signal(sig, SIG_DFL);  // the test runner's handlers stay with it
        if (::setgroups(extra.size(), extra.data()) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) ::_exit(100);
        const std::string out = body();
        (void)!::write(p[1], out.data(), out.size());
        ::_exit(0);
    }
    ::close(p[1]);
    Outcome o;
    char buf[4096];
    for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;) o.said.append(buf, std::size_t(n));
    ::close(p[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (WIFEXITED(status)) o.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) o.signal = WTERMSIG(status);
    return o;
}

}  // namespace rvoip::events::test
