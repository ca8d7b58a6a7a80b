/* Helpers of the tests that talk to a real network License Management Service: start the
   `wmlicense-service` binary as a child process on 127.0.0.1 with an ephemeral port, read the
   URL from the one line it prints, ask it for its keys (`keys list`), stop it with SIGTERM and
   check that it drained and exited 0. A service still running when the test exits (a failed
   REQUIRE_OK) is killed by an atexit handler. Include after test_util.h. */
#ifndef WMLICENSE_SERVICE_UTIL_H
#define WMLICENSE_SERVICE_UTIL_H

#include "test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>

#define WSVC_MAX 8
#define WSVC_MAX_ARGS 32

/* One running service. */
typedef struct {
  pid_t pid;            /* 0 once stopped */
  int out_fd;           /* read end of the child's stdout; kept open so a late write never
                           meets a closed pipe (SIGPIPE) */
  char url[256];        /* "http://127.0.0.1:PORT" (https:// with TLS) */
  char data[512];       /* its --data directory */
  char log[600];        /* its stderr */
} wsvc;

static wsvc *wsvc_running[WSVC_MAX];
static int wsvc_atexit_set;

static inline double wsvc_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static inline void wsvc_sleep_ms(unsigned ms) {
  struct timespec ts;
  ts.tv_sec = (time_t)(ms / 1000u);
  ts.tv_nsec = (long)(ms % 1000u) * 1000000L;
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Kills every service this process started and did not stop (at exit after a failure). */
static inline void wsvc_kill_all(void) {
  int i;
  for (i = 0; i < WSVC_MAX; i++) {
    wsvc *s = wsvc_running[i];
    if (s && s->pid > 0) {
      kill(s->pid, SIGKILL);
      waitpid(s->pid, NULL, 0);
      s->pid = 0;
    }
    wsvc_running[i] = NULL;
  }
}

static inline void wsvc_track(wsvc *s, int add) {
  int i;
  if (!wsvc_atexit_set) {
    atexit(wsvc_kill_all);
    wsvc_atexit_set = 1;
  }
  for (i = 0; i < WSVC_MAX; i++) {
    if (add && !wsvc_running[i]) {
      wsvc_running[i] = s;
      return;
    }
    if (!add && wsvc_running[i] == s) {
      wsvc_running[i] = NULL;
      return;
    }
  }
}

/* The service binary: argv[1] if given (CMake passes WMLICENSE_SERVICE_BIN), else
   $WMLICENSE_SERVICE_BIN. NULL when neither names an executable file. */
static inline const char *wsvc_binary(int argc, char **argv) {
  const char *bin = argc > 1 ? argv[1] : getenv("WMLICENSE_SERVICE_BIN");
  if (!bin || !*bin || access(bin, X_OK) != 0) return NULL;
  return bin;
}

/* Prints the service's log (its stderr), for a failure's context. */
static inline void wsvc_print_log(const wsvc *s) {
  FILE *f = fopen(s->log, "r");
  char line[1024];
  int n = 0;
  if (!f) return;
  fprintf(stderr, "---- log of the service on %s (%s), last lines ----\n", s->url, s->data);
  /* The whole log is short in these tests; print at most 200 lines. */
  while (fgets(line, sizeof line, f) && n++ < 200) fputs(line, stderr);
  fprintf(stderr, "---- end of log ----\n");
  fclose(f);
}

/* Starts `bin serve --listen 127.0.0.1:0 --data DATA <extra...>` (extra is NULL-terminated,
   may be NULL) and waits up to `timeout_ms` for its "listening on URL" line. Returns 0 on
   success (s->url set), -1 on failure (with a message; the child is killed). */
static inline int wsvc_start(wsvc *s, const char *bin, const char *data, const char *const *extra,
                             unsigned timeout_ms) {
  const char *args[WSVC_MAX_ARGS];
  int n = 0, pfd[2], logfd;
  pid_t pid;
  char buf[512];
  size_t got = 0;
  double deadline;
  const char *prefix = "wmlicense-service listening on ";

  memset(s, 0, sizeof *s);
  s->out_fd = -1;
  snprintf(s->data, sizeof s->data, "%s", data);
  snprintf(s->log, sizeof s->log, "%s.log", data);
  args[n++] = bin;
  args[n++] = "serve";
  args[n++] = "--listen";
  args[n++] = "127.0.0.1:0";
  args[n++] = "--data";
  args[n++] = data;
  while (extra && *extra && n < WSVC_MAX_ARGS - 1) args[n++] = *extra++;
  args[n] = NULL;

  logfd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (logfd < 0 || pipe(pfd) != 0) {
    fprintf(stderr, "wsvc_start: %s\n", strerror(errno));
    if (logfd >= 0) close(logfd);
    return -1;
  }
  /* Not inherited by later children (other services, popen): dup2 in the child clears it. */
  fcntl(pfd[0], F_SETFD, FD_CLOEXEC);
  fcntl(pfd[1], F_SETFD, FD_CLOEXEC);
  fflush(stdout);
  fflush(stderr);
  pid = fork();
  if (pid < 0) {
    fprintf(stderr, "wsvc_start: fork: %s\n", strerror(errno));
    close(pfd[0]);
    close(pfd[1]);
    close(logfd);
    return -1;
  }
  if (pid == 0) {
    /* Only async-signal-safe calls between fork and exec (the parent has threads). */
    dup2(pfd[1], 1);
    dup2(logfd, 2);
    close(pfd[0]);
    close(pfd[1]);
    execv(bin, (char *const *)args);
    _exit(127);
  }
  close(pfd[1]);
  close(logfd);
  s->pid = pid;
  s->out_fd = pfd[0];
  wsvc_track(s, 1);

  /* The first line, read byte by byte with poll() so a silent child cannot hang the test. */
  deadline = wsvc_now_ms() + timeout_ms;
  for (;;) {
    struct pollfd p;
    double left = deadline - wsvc_now_ms();
    int pr;
    ssize_t r;
    if (left <= 0) {
      fprintf(stderr, "wsvc_start: %s printed no \"listening on\" line within %u ms\n", bin, timeout_ms);
      goto fail;
    }
    p.fd = s->out_fd;
    p.events = POLLIN;
    p.revents = 0;
    pr = poll(&p, 1, (int)left + 1);
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) continue;
    r = read(s->out_fd, buf + got, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      int st = 0;
      waitpid(pid, &st, 0);
      s->pid = 0;
      fprintf(stderr, "wsvc_start: %s exited before printing its URL (status 0x%x)\n", bin, (unsigned)st);
      wsvc_print_log(s);
      wsvc_track(s, 0);
      close(s->out_fd);
      s->out_fd = -1;
      return -1;
    }
    if (buf[got] == '\n') break;
    if (++got >= sizeof buf - 1) {
      fprintf(stderr, "wsvc_start: the first line of %s is too long\n", bin);
      goto fail;
    }
  }
  buf[got] = '\0';
  if (strncmp(buf, prefix, strlen(prefix)) != 0 ||
      (strncmp(buf + strlen(prefix), "http://", 7) != 0 && strncmp(buf + strlen(prefix), "https://", 8) != 0)) {
    fprintf(stderr, "wsvc_start: unexpected first line of %s: \"%s\"\n", bin, buf);
    goto fail;
  }
  if (snprintf(s->url, sizeof s->url, "%s", buf + strlen(prefix)) >= (int)sizeof s->url) {
    fprintf(stderr, "wsvc_start: the URL in \"%s\" is too long\n", buf);
    goto fail;
  }
  return 0;

fail:
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  s->pid = 0;
  wsvc_print_log(s);
  wsvc_track(s, 0);
  close(s->out_fd);
  s->out_fd = -1;
  return -1;
}

/* Sends SIGTERM and waits up to `timeout_ms` for the service to exit. Returns its wait status,
   or -1 if it had to be killed (it did not drain in time). */
static inline int wsvc_stop(wsvc *s, unsigned timeout_ms) {
  double deadline = wsvc_now_ms() + timeout_ms;
  int st = 0;
  if (s->pid <= 0) return -1;
  kill(s->pid, SIGTERM);
  for (;;) {
    pid_t w = waitpid(s->pid, &st, WNOHANG);
    if (w == s->pid) break;
    if (w < 0 && errno != EINTR) {
      st = -1;
      break;
    }
    if (wsvc_now_ms() > deadline) {
      fprintf(stderr, "wsvc_stop: the service on %s did not exit within %u ms of SIGTERM\n", s->url, timeout_ms);
      kill(s->pid, SIGKILL);
      waitpid(s->pid, NULL, 0);
      st = -1;
      break;
    }
    wsvc_sleep_ms(10);
  }
  s->pid = 0;
  wsvc_track(s, 0);
  if (s->out_fd >= 0) close(s->out_fd);
  s->out_fd = -1;
  return st;
}

/* True when a wait status says "exited with status 0". */
static inline int wsvc_exited_ok(int st) {
  return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* Runs `bin keys list --data DATA` and writes the current key's public key (64 hex digits) to
   `out` (65 bytes). Returns 0 on success. */
static inline int wsvc_current_key(const char *bin, const char *data, char out[65]) {
  char cmd[2048], line[512];
  FILE *p;
  int found = 0;
  if (strchr(bin, '\'') || strchr(data, '\'')) return -1;
  snprintf(cmd, sizeof cmd, "'%s' keys list --data '%s'", bin, data);
  fflush(stdout);
  fflush(stderr);
  p = popen(cmd, "r");
  if (!p) return -1;
  while (fgets(line, sizeof line, p)) {
    char key_id[128], pub[128], created[128], cur[128];
    int k = sscanf(line, "%127s %127s %127s %127s", key_id, pub, created, cur);
    if (k == 4 && strcmp(cur, "current") == 0 && strlen(pub) == 64) {
      memcpy(out, pub, 65);
      found = 1;
    }
  }
  if (pclose(p) != 0) return -1;
  return found ? 0 : -1;
}

/* A TCP listener on 127.0.0.1 that never accepts: connections complete in the kernel's backlog
   and every request waits forever. Writes its port; returns the socket (close it to end). */
static inline int wsvc_black_hole(unsigned *port) {
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  fcntl(fd, F_SETFD, FD_CLOEXEC); /* a child must not keep it open after close() here */
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
    close(fd);
    return -1;
  }
  *port = ntohs(a.sin_port);
  return fd;
}

/* A port on 127.0.0.1 where nothing listens (bound, then closed: refused at once). */
static inline unsigned wsvc_dead_port(void) {
  unsigned port = 0;
  int fd = wsvc_black_hole(&port);
  if (fd >= 0) close(fd);
  return port;
}

#endif
