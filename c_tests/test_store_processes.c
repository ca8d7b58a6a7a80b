/* Two processes write one store at the same time: each child opens the store itself and puts
   10,000 licenses (500 with WMLICENSE_TEST_QUICK) with individual wm_license_store_put calls,
   disjoint key IDs. Pipes act as start barriers, so both open at once and both write at once.
   Every call must succeed and the store must then hold all 20,000 licenses, intact.

   Then a deterministic form of the race between two processes creating one store: a process
   opens a new store while another holds the database's write lock, as SQLite does while it
   turns a fresh database into WAL mode. The open must wait (the store has a busy timeout) and
   succeed, not fail with "database is locked". */
#include "test_util.h"

#ifdef _WIN32
int main(void) {
  WMT_SKIP_ON_WINDOWS("test_store_processes", "its writers are fork()ed and killed with signals (POSIX); the CLI run under Wine covers two processes on one store");
}
#else

#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>

#define CHILDREN 2

static unsigned per_child = 10000;

typedef struct {
  int id;
  int64_t start_ns, end_ns; /* the put phase, CLOCK_MONOTONIC */
  unsigned puts_ok;
} child_report;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int read_full(int fd, void *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = read(fd, (char *)buf + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    done += (size_t)n;
  }
  return 0;
}

static int write_full(int fd, const void *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(fd, (const char *)buf + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    done += (size_t)n;
  }
  return 0;
}

/* Child `id`: wait for "go", open, say "opened", wait for "go", put its licenses, close,
   report. Exit status 0 only if every call returned WM_S_OK. */
static void run_child(int id, const char *dir, int go_fd, int ready_fd, int report_fd) {
  wm_license_store *s = NULL;
  wm_hresult hr;
  child_report rep;
  unsigned i, first = (unsigned)id * per_child;
  char byte;
  int failed = 0;

  memset(&rep, 0, sizeof rep);
  rep.id = id;
  if (read_full(go_fd, &byte, 1) != 0) _exit(10);
  hr = wm_license_store_open(dir, &s);
  if (hr != WM_S_OK) {
    fprintf(stderr, "child %d: open returned 0x%08x: %s\n", id, (unsigned)hr, wm_last_error_message());
    _exit(11);
  }
  byte = (char)('0' + id);
  if (write_full(ready_fd, &byte, 1) != 0) _exit(12);
  close(ready_fd); /* so the parent sees EOF, not a hang, if the other child dies */
  if (read_full(go_fd, &byte, 1) != 0) _exit(13);

  rep.start_ns = now_ns();
  for (i = first; i < first + per_child; i++) {
    wm_license l;
    char kid[32];
    uint8_t key[16];
    wmt_make_license(&l, i, kid, key, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP);
    hr = wm_license_store_put(s, &l);
    if (hr != WM_S_OK) {
      if (failed < 5) {
        fprintf(stderr, "child %d: put #%u returned 0x%08x (%s): %s\n", id, i, (unsigned)hr,
                wm_hresult_message(hr), wm_last_error_message());
      }
      failed++;
    } else {
      rep.puts_ok++;
    }
  }
  rep.end_ns = now_ns();
  wm_license_store_close(s);
  if (failed) fprintf(stderr, "child %d: %d of %u puts failed\n", id, failed, per_child);
  if (write_full(report_fd, &rep, sizeof rep) != 0) _exit(14);
  _exit(failed ? 1 : 0);
}

typedef struct {
  int calls;
  int match;
  const wm_license *want;
} getter;

static int32_t check_get(const wm_license *l, void *ctx) {
  getter *g = (getter *)ctx;
  const wm_license *w = g->want;
  g->calls++;
  if (l->key_id_len == w->key_id_len && memcmp(l->key_id, w->key_id, w->key_id_len) == 0 &&
      l->content_key_len == w->content_key_len &&
      memcmp(l->content_key, w->content_key, w->content_key_len) == 0 && l->title == NULL &&
      l->rights == w->rights && l->play_count == w->play_count && l->begin_date == w->begin_date &&
      l->expiration_date == w->expiration_date && l->issued_at == w->issued_at)
    g->match++;
  return 0;
}

typedef struct {
  unsigned total, per[CHILDREN], bad, dup;
  unsigned char *seen;
} walker;

/* Checks every stored license against what its child put. */
static int32_t walk(const wm_license *l, void *ctx) {
  walker *w = (walker *)ctx;
  unsigned n;
  char text[16];
  char kid[32];
  uint8_t key[16];
  wm_license want;
  getter g;
  w->total++;
  if (l->key_id_len != 12) {
    w->bad++;
    return 0;
  }
  memcpy(text, l->key_id, 12);
  text[12] = '\0';
  if (sscanf(text, "kid-%8u", &n) != 1 || n >= CHILDREN * per_child) {
    w->bad++;
    return 0;
  }
  wmt_make_license(&want, n, kid, key, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP);
  memset(&g, 0, sizeof g);
  g.want = &want;
  check_get(l, &g);
  if (g.match != 1) w->bad++;
  if (w->seen[n]++) w->dup++;
  w->per[n / per_child]++;
  return 0;
}

/* Two children put their licenses into one new store at the same time. */
static void two_writers(void) {
  char dir[512];
  int go[CHILDREN][2], ready[2], report[2];
  pid_t pids[CHILDREN];
  child_report reps[CHILDREN];
  int i, status;
  char byte;
  wm_license_store *s = NULL;
  uint64_t count = 0;

  wmt_temp_dir(dir, sizeof dir, "procs");
  fflush(NULL);
  CHECK(pipe(ready) == 0);
  CHECK(pipe(report) == 0);
  for (i = 0; i < CHILDREN; i++) {
    CHECK(pipe(go[i]) == 0);
    pids[i] = fork();
    if (pids[i] < 0) {
      perror("fork");
      exit(1);
    }
    if (pids[i] == 0) {
      alarm(240); /* never outlive a hung parent */
      close(go[i][1]);
      close(ready[0]);
      close(report[0]);
      run_child(i, dir, go[i][0], ready[1], report[1]);
    }
    close(go[i][0]);
  }
  close(ready[1]);
  close(report[1]);
  signal(SIGPIPE, SIG_IGN); /* a dead child must fail the test, not kill it */

  /* Barrier 1: both open the (new) store at the same time. */
  byte = 'g';
  for (i = 0; i < CHILDREN; i++) CHECK(write_full(go[i][1], &byte, 1) == 0);
  for (i = 0; i < CHILDREN; i++) {
    if (read_full(ready[0], &byte, 1) != 0) {
      fprintf(stderr, "a child died before opening the store\n");
      wmt_failures++;
      break;
    }
  }
  /* Barrier 2: both start putting at the same time. */
  byte = 'g';
  for (i = 0; i < CHILDREN; i++) {
    write_full(go[i][1], &byte, 1);
    close(go[i][1]);
  }

  memset(reps, 0, sizeof reps);
  for (i = 0; i < CHILDREN; i++) {
    child_report r;
    if (read_full(report[0], &r, sizeof r) != 0) {
      fprintf(stderr, "a child sent no report\n");
      wmt_failures++;
      break;
    }
    if (r.id >= 0 && r.id < CHILDREN) reps[r.id] = r;
  }
  close(ready[0]);
  close(report[0]);

  for (i = 0; i < CHILDREN; i++) {
    pid_t w = waitpid(pids[i], &status, 0);
    CHECK(w == pids[i]);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
      fprintf(stderr, "child %d: %s %d\n", i, WIFEXITED(status) ? "exit status" : "killed by signal",
              WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  for (i = 0; i < CHILDREN; i++) CHECK(reps[i].puts_ok == per_child);
  /* The two put phases really overlapped in time. */
  CHECK(reps[0].start_ns < reps[1].end_ns && reps[1].start_ns < reps[0].end_ns);
  printf("child 0 put for %.2f s, child 1 for %.2f s, %u licenses each\n",
         (double)(reps[0].end_ns - reps[0].start_ns) / 1e9,
         (double)(reps[1].end_ns - reps[1].start_ns) / 1e9, per_child);

  REQUIRE_OK(wm_license_store_open(dir, &s));
  CHECK_HR(wm_license_store_count(s, &count), WM_S_OK);
  if (count != (uint64_t)CHILDREN * per_child) {
    fprintf(stderr, "the store holds %llu licenses, expected %u\n", (unsigned long long)count,
            CHILDREN * per_child);
  }
  CHECK(count == (uint64_t)CHILDREN * per_child);

  /* Spot checks through get: the first, last and some middle licenses of each child. */
  {
    unsigned c, k;
    for (c = 0; c < CHILDREN; c++) {
      const unsigned offsets[] = {0, 1, per_child / 3, per_child / 2, per_child - 2, per_child - 1};
      for (k = 0; k < sizeof offsets / sizeof offsets[0]; k++) {
        unsigned n = c * per_child + offsets[k];
        wm_license l;
        char kid[32];
        uint8_t key[16];
        getter g;
        wmt_make_license(&l, n, kid, key, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP);
        memset(&g, 0, sizeof g);
        g.want = &l;
        CHECK_HR(wm_license_store_get(s, l.key_id, l.key_id_len, check_get, &g), WM_S_OK);
        if (g.calls != 1 || g.match != 1) fprintf(stderr, "license %u does not read back\n", n);
        CHECK(g.calls == 1 && g.match == 1);
      }
    }
  }

  /* Every license, once, intact. */
  {
    walker w;
    memset(&w, 0, sizeof w);
    w.seen = calloc(CHILDREN * per_child, 1);
    CHECK(w.seen != NULL);
    if (w.seen) {
      CHECK_HR(wm_license_store_for_each(s, walk, &w), WM_S_OK);
      CHECK(w.total == CHILDREN * per_child);
      CHECK(w.per[0] == per_child);
      CHECK(w.per[1] == per_child);
      CHECK(w.bad == 0);
      CHECK(w.dup == 0);
      free(w.seen);
    }
  }
  wm_license_store_close(s);
  wmt_rm_rf(dir);
}

/* SQLite's lock bytes on the database file (its documented locking protocol, see os_unix.c and
   "File Locking And Concurrency in SQLite Version 3"): a connection holds RESERVED while it
   writes a rollback-journal transaction, e.g. while it turns a new database into WAL mode. */
#define SQLITE_RESERVED_BYTE 0x40000001L
#define SQLITE_PENDING_BYTE 0x40000000L

static void sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* A child opens a new store while this process holds `lock_byte` of its (still empty) database
   file for `hold_ms`, then puts and counts one license. The child must succeed. */
static void open_while_locked(long lock_byte, long hold_ms, const char *what) {
  char dir[512], db[600];
  int fd, status;
  struct flock fl;
  pid_t pid;
  wm_license_store *s = NULL;
  uint64_t count = 0;

  wmt_temp_dir(dir, sizeof dir, "locked");
  snprintf(db, sizeof db, "%s/licenses.db", dir);
  fd = open(db, O_RDWR | O_CREAT, 0600);
  CHECK(fd >= 0);
  if (fd < 0) return;
  memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = (off_t)lock_byte;
  fl.l_len = 1;
  CHECK(fcntl(fd, F_SETLK, &fl) == 0);
  fflush(NULL);
  pid = fork();
  if (pid < 0) {
    perror("fork");
    exit(1);
  }
  if (pid == 0) {
    wm_license l;
    char kid[32];
    uint8_t key[16];
    uint64_t c = 0;
    wm_hresult hr;
    alarm(120);
    close(fd);
    hr = wm_license_store_open(dir, &s);
    if (hr != WM_S_OK) {
      fprintf(stderr, "%s: wm_license_store_open returned 0x%08x (%s): %s\n", what, (unsigned)hr,
              wm_hresult_message(hr), wm_last_error_message());
      _exit(1);
    }
    wmt_make_license(&l, 7, kid, key, WM_RIGHT_PLAYBACK);
    hr = wm_license_store_put(s, &l);
    if (hr != WM_S_OK) {
      fprintf(stderr, "%s: put returned 0x%08x: %s\n", what, (unsigned)hr, wm_last_error_message());
      _exit(2);
    }
    if (wm_license_store_count(s, &c) != WM_S_OK || c != 1) _exit(3);
    wm_license_store_close(s);
    _exit(0);
  }
  sleep_ms(hold_ms);
  fl.l_type = F_UNLCK;
  CHECK(fcntl(fd, F_SETLK, &fl) == 0);
  CHECK(waitpid(pid, &status, 0) == pid);
  if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
    fprintf(stderr, "%s: the child failed (%s %d)\n", what,
            WIFEXITED(status) ? "exit status" : "signal",
            WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
  }
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  close(fd);

  /* The store the child created is whole. */
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    REQUIRE_OK(wm_license_store_open(dir, &s));
    CHECK_HR(wm_license_store_count(s, &count), WM_S_OK);
    CHECK(count == 1);
    wm_license_store_close(s);
  }
  wmt_rm_rf(dir);
}

int main(void) {
  if (getenv("WMLICENSE_TEST_QUICK")) per_child = 500;

  two_writers();

  /* Another process in the middle of a write transaction on the new database. */
  open_while_locked(SQLITE_RESERVED_BYTE, 300, "open while another process holds RESERVED");
  /* Another process about to commit (PENDING): this one already waits today; keep it so. */
  open_while_locked(SQLITE_PENDING_BYTE, 300, "open while another process holds PENDING");

  return wmt_finish("test_store_processes");
}
#endif
