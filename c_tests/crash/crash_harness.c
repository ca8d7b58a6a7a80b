/* Crash harness: kills a process with SIGKILL at a random instant of a backup or a restore and
   checks that nothing was lost and that nothing stays behind once the next operation on the
   same place has run.

     crash_harness [-n RUNS] [-s SEED] [-l LICENSES] [-r RUN] [-t MS] [-k] MODE...
     MODE: backup | restore | restore-new | all

   For each mode the parent (which never calls the library itself: the library starts worker
   threads with the first restorer, and a fork must not inherit them) builds a template in a
   child process once, then times one complete operation (the calibration run), then for each
   run copies the template to a fresh run directory, forks a child that performs ONE operation
   and kills it with SIGKILL after a delay drawn uniformly from [0, 1.1 x the calibrated time).
   Another child then checks what the kill left:

   backup       the store holds LICENSES licenses (a tenth without WM_RIGHT_BACKUP) and the
                backup directory an older backup of half of them; the child backs up with
                WM_BACKUP_OVERWRITE. After the kill the file at BackupPath must be byte for byte
                the old one, or a new one that verifies (WM_RESTORE_VERIFY_ONLY) with the new
                count; the source store must be unchanged. Next operation: another backup there;
                then the directory holds licenses.wmlb and .licenses.wmlb.lock, nothing else.
   restore      a backup of LICENSES licenses is restored into a store that already holds other
                licenses, older copies of some of the backup's (which the restore replaces) and
                newer copies of others (which it keeps). After the kill the store must be exactly
                as before or exactly as after the restore (count and a digest of every field).
   restore-new  restore with WM_RESTORE_INDIVIDUALIZE into a store directory that does not exist
                yet. After the kill there must be no store there (the library says it needs
                individualization) or the complete one.
   For both restore modes the next operation is the same restore again; it must succeed and
   leave the complete store, and no staging directory (".<store name>.*.tmp") may be left
   beside the store.

   The child reports its progress through a pipe ('S' about to start, 'B' BEGIN, 'E' / 'F' END
   ok / failed), so each kill is classified as before the operation began, mid-operation or
   after its END. Every run's kill fraction derives from (seed, mode, run): `-s SEED -r RUN`
   replays one run, `-t MS` also fixes the window. Exit status: 0 no violation, 1 violations,
   2 the harness itself could not run. */
#include "stress_util.h"
#include "restorer_util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

enum { MODE_BACKUP, MODE_RESTORE, MODE_RESTORE_NEW, MODE_COUNT };
static const char *const mode_names[MODE_COUNT] = {"backup", "restore", "restore-new"};

/* Kinds of violation, counted separately. */
enum { V_STATE, V_SOURCE, V_NEXT, V_LEFTOVER, V_ERROR, V_COUNT };
static const char *const violation_names[V_COUNT] = {
    "state",                     /* backup neither old nor complete new / store neither before nor after */
    "source changed",            /* the store a backup read from changed */
    "next op failed",            /* the next operation on the same place did not succeed */
    "leftovers after next op",   /* temporary files / staging directories not swept */
    "errors",                    /* an operation failed without a kill, a checker died */
};

enum { PHASE_BEFORE, PHASE_MID, PHASE_AFTER, PHASE_COUNT };

/* ---------------------------------------------------------------- options */

static unsigned opt_runs = 200;
static uint64_t opt_seed;
static unsigned opt_licenses = 20000;
static long opt_only_run = -1;
static double opt_window_ms = 0; /* 0: calibrate */
static int opt_keep;

/* ---------------------------------------------------------------- small utilities */

static uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/* The kill instant of run `run` of `mode`, as a fraction of the window: uniform in [0, 1). */
static double kill_fraction(uint64_t seed, int mode, unsigned run) {
  uint64_t x = splitmix64(splitmix64(seed ^ ((uint64_t)(mode + 1) << 56)) ^ (uint64_t)run);
  return (double)(x >> 11) / 9007199254740992.0;
}

static int write_all(int fd, const void *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(fd, (const char *)buf + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    done += (size_t)n;
  }
  return 0;
}

/* Reads until EOF or `len` bytes; returns the number read. */
static size_t read_upto(int fd, void *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = read(fd, (char *)buf + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += (size_t)n;
  }
  return done;
}

static void join(char *out, const char *a, const char *b) {
  if ((size_t)snprintf(out, PATH_MAX, "%s/%s", a, b) >= PATH_MAX) {
    fprintf(stderr, "path too long: %s/%s\n", a, b);
    exit(2);
  }
}

static void sleep_until(const struct timespec *t) {
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, t, NULL) == EINTR) {
  }
}

static struct timespec ts_add_ms(struct timespec t, double ms) {
  long long ns = (long long)(ms * 1e6);
  t.tv_sec += (time_t)(ns / 1000000000LL);
  t.tv_nsec += (long)(ns % 1000000000LL);
  if (t.tv_nsec >= 1000000000L) {
    t.tv_sec++;
    t.tv_nsec -= 1000000000L;
  }
  return t;
}

static double ts_diff_ms(struct timespec a, struct timespec b) {
  return (double)(a.tv_sec - b.tv_sec) * 1000.0 + (double)(a.tv_nsec - b.tv_nsec) / 1e6;
}

/* Copies the tree `src` to `dst` (regular files and directories, modes kept). */
static void copy_tree(const char *src, const char *dst) {
  struct stat st;
  DIR *d;
  struct dirent *e;
  if (lstat(src, &st) != 0) {
    fprintf(stderr, "copy_tree: %s: %s\n", src, strerror(errno));
    exit(2);
  }
  if (S_ISDIR(st.st_mode)) {
    if (mkdir(dst, st.st_mode & 07777) != 0 && errno != EEXIST) {
      fprintf(stderr, "copy_tree: mkdir %s: %s\n", dst, strerror(errno));
      exit(2);
    }
    d = opendir(src);
    if (!d) {
      fprintf(stderr, "copy_tree: opendir %s: %s\n", src, strerror(errno));
      exit(2);
    }
    while ((e = readdir(d)) != NULL) {
      char s[PATH_MAX], t[PATH_MAX];
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      join(s, src, e->d_name);
      join(t, dst, e->d_name);
      copy_tree(s, t);
    }
    closedir(d);
  } else if (S_ISREG(st.st_mode)) {
    char buf[1 << 16];
    int in = open(src, O_RDONLY), out;
    ssize_t n;
    if (in < 0) {
      fprintf(stderr, "copy_tree: open %s: %s\n", src, strerror(errno));
      exit(2);
    }
    out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, st.st_mode & 07777);
    if (out < 0) {
      fprintf(stderr, "copy_tree: create %s: %s\n", dst, strerror(errno));
      exit(2);
    }
    while ((n = read(in, buf, sizeof buf)) > 0)
      if (write_all(out, buf, (size_t)n) != 0) {
        fprintf(stderr, "copy_tree: write %s: %s\n", dst, strerror(errno));
        exit(2);
      }
    close(in);
    if (close(out) != 0) {
      fprintf(stderr, "copy_tree: close %s: %s\n", dst, strerror(errno));
      exit(2);
    }
  }
}

/* Lists the entries of `dir` that `bad(name, arg)` rejects into `out` (comma separated,
   truncated); returns how many there were (-1 when `dir` cannot be read). */
static int list_bad_entries(const char *dir, int (*bad)(const char *name, const char *arg),
                            const char *arg, char *out, size_t out_size) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int k = 0;
  size_t used = 0;
  if (out_size) out[0] = '\0';
  if (!d) return -1;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (!bad(e->d_name, arg)) continue;
    k++;
    if (used < out_size) {
      int w = snprintf(out + used, out_size - used, "%s%s", used ? ", " : "", e->d_name);
      if (w > 0) used += (size_t)w;
    }
  }
  closedir(d);
  return k;
}

/* In a backup directory only the backup and its hidden lock file may stay. */
static int bad_in_backup_dir(const char *name, const char *arg) {
  (void)arg;
  return strcmp(name, "licenses.wmlb") != 0 && strcmp(name, ".licenses.wmlb.lock") != 0;
}

/* Beside a store named `arg`: its staging directories, ".<arg>.*.tmp". */
static int is_staging_dir(const char *name, const char *arg) {
  size_t n = strlen(name), a = strlen(arg);
  return n > a + 2 + 4 && name[0] == '.' && strncmp(name + 1, arg, a) == 0 && name[1 + a] == '.' &&
         strcmp(name + n - 4, ".tmp") == 0;
}

/* ---------------------------------------------------------------- library side (children only) */

/* A finished operation as the checks see it. */
typedef struct {
  wm_hresult start_hr; /* the call that starts it */
  wms_event end;       /* status 0 when no END arrived */
} op_result;

/* Runs one operation to its END in this process (a child). */
static op_result run_op(int restore, const char *store, const char *path, uint32_t flags) {
  wms_recorder rec;
  wm_backup_restorer *r = NULL;
  op_result res;
  memset(&res, 0, sizeof res);
  wms_recorder_init(&rec);
  REQUIRE_OK(wm_backup_restorer_create(wms_record, &rec, &r));
  REQUIRE_OK(wms_set_prop(r, WM_PROP_STORE_PATH, store));
  REQUIRE_OK(wms_set_prop(r, restore ? WM_PROP_RESTORE_PATH : WM_PROP_BACKUP_PATH, path));
  res.start_hr = restore ? wm_backup_restorer_restore(r, flags) : wm_backup_restorer_backup(r, flags);
  if (res.start_hr == WM_S_OK) {
    if (wms_wait_ends(&rec, 1, 600000)) res.end = wms_last_end(&rec);
  }
  wm_backup_restorer_destroy(r);
  wms_recorder_free(&rec);
  return res;
}

static int op_ok(const op_result *r) {
  return r->start_hr == WM_S_OK && r->end.status == WM_STATUS_BACKUPRESTORE_END && r->end.hr == WM_S_OK;
}

static void describe_op(char *out, size_t size, const char *what, const op_result *r) {
  if (r->start_hr != WM_S_OK)
    snprintf(out, size, "%s: the call returned 0x%08x (%s)", what, (unsigned)r->start_hr,
             wm_hresult_message(r->start_hr));
  else if (r->end.status != WM_STATUS_BACKUPRESTORE_END)
    snprintf(out, size, "%s: no END within 600 s", what);
  else
    snprintf(out, size, "%s: END 0x%08x (%s) processed %llu total %llu skipped %llu %s", what,
             (unsigned)r->end.hr, wm_hresult_message(r->end.hr), (unsigned long long)r->end.processed,
             (unsigned long long)r->end.total, (unsigned long long)r->end.skipped, r->end.message);
}

/* Count and digest of the store at `dir` without creating one (hr != S_OK: it did not open). */
static wm_hresult digest_store(const char *dir, wms_dump_t *d) {
  wm_license_store *s = NULL;
  wm_hresult hr;
  d->count = 0;
  d->sum = 14695981039346656037ull;
  hr = wm_license_store_open(dir, &s);
  if (hr != WM_S_OK) return hr;
  hr = wm_license_store_for_each(s, wms_dump_visit, d);
  wm_license_store_close(s);
  return hr;
}

static int digest_eq(wms_dump_t a, wms_dump_t b) { return a.count == b.count && a.sum == b.sum; }

/* ---------------------------------------------------------------- per-mode layout */

/* Every run directory (and the template) holds:
     home/          WMLICENSE_HOME (the embedded service's keys and ledger, the restore seed)
     store/         backup: the store backed up
     src/           restore modes, template only: the store the backup was made from
     backup/        the backup directory (licenses.wmlb)
     stores/target  restore: the store restored into
     stores/new     restore-new: the store the restore creates
     scratch/       StorePath of the verifying restores (never created) */
typedef struct {
  int mode;
  char base[PATH_MAX], tpl[PATH_MAX], run[PATH_MAX];
  /* what the template holds, found by the setup child */
  uint64_t old_count, new_count; /* backup: licenses in the old / a new backup */
  wms_dump_t source;             /* backup: the store backed up */
  wms_dump_t before, after;      /* restore modes: the target store before / after (after: calibration) */
  uint8_t *old_bytes;            /* backup: the old backup file */
  size_t old_len;
  double window_ms;
} mode_ctx;

typedef struct {
  int mode;
  char home[PATH_MAX], store[PATH_MAX], backup[PATH_MAX], scratch[PATH_MAX], stores[PATH_MAX];
  const char *store_name; /* last component of `store` (restore modes) */
} run_paths;

static void paths_in(const mode_ctx *m, const char *root, run_paths *p) {
  memset(p, 0, sizeof *p);
  p->mode = m->mode;
  join(p->home, root, "home");
  join(p->backup, root, "backup");
  join(p->scratch, root, "scratch");
  join(p->stores, root, "stores");
  if (m->mode == MODE_BACKUP) {
    join(p->store, root, "store");
  } else {
    p->store_name = m->mode == MODE_RESTORE ? "target" : "new";
    join(p->store, p->stores, p->store_name);
  }
}

/* ---------------------------------------------------------------- children */

/* Forks; the child runs fn(arg, fd) with `fd` the write end of a pipe and exits with its
   return value. The parent reads at most `len` bytes of what the child wrote into `out` and
   returns the child's wait status; *got gets the byte count. */
static int in_child(int (*fn)(void *arg, int fd), void *arg, void *out, size_t len, size_t *got) {
  int fds[2], status = 0;
  pid_t pid;
  size_t n;
  if (pipe(fds) != 0) {
    perror("pipe");
    exit(2);
  }
  fflush(NULL);
  pid = fork();
  if (pid < 0) {
    perror("fork");
    exit(2);
  }
  if (pid == 0) {
    int rc;
    close(fds[0]);
    rc = fn(arg, fds[1]);
    fflush(NULL);
    _exit(rc);
  }
  close(fds[1]);
  n = read_upto(fds[0], out, len);
  close(fds[0]);
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (got) *got = n;
  return status;
}

static void set_home(const char *home) {
  if (setenv("WMLICENSE_HOME", home, 1) != 0) {
    perror("setenv");
    _exit(2);
  }
}

/* Puts licenses first .. first+count-1 of wmt_make_license with `title` and issued_at moved by
   `shift` seconds, in one transaction. */
static void put_variants(const char *dir, unsigned first, unsigned count, const char *title, int64_t shift) {
  wm_license *ls = (wm_license *)calloc(count, sizeof *ls);
  char(*kids)[32] = (char(*)[32])calloc(count, 32);
  uint8_t(*keys)[16] = (uint8_t(*)[16])calloc(count, 16);
  unsigned i;
  if (!ls || !kids || !keys) {
    fprintf(stderr, "put_variants: out of memory\n");
    exit(2);
  }
  for (i = 0; i < count; i++) {
    wmt_make_license(&ls[i], first + i, kids[i], keys[i], WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP);
    ls[i].title = title;
    ls[i].issued_at += shift;
  }
  REQUIRE_OK(wmr_put(dir, ls, count));
  free(ls);
  free(kids);
  free(keys);
}

/* Builds the template of a mode; writes the filled mode_ctx expectations to fd. */
static int setup_child(void *arg, int fd) {
  mode_ctx *m = (mode_ctx *)arg;
  run_paths p;
  op_result r;
  unsigned n = opt_licenses;
  char src[PATH_MAX], buf[512];
  paths_in(m, m->tpl, &p);
  set_home(p.home);
  mkdir(p.home, 0700);
  mkdir(p.stores, 0700);
  if (m->mode == MODE_BACKUP) {
    /* Old state: the first half, all with WM_RIGHT_BACKUP, backed up. Then more licenses, a
       tenth of the total without WM_RIGHT_BACKUP. */
    unsigned a = n / 2, restricted = n / 10, b = n - a - restricted;
    wms_fill_store(p.store, 0, a, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 24, 8);
    r = run_op(0, p.store, p.backup, 0);
    if (!op_ok(&r)) {
      describe_op(buf, sizeof buf, "template backup", &r);
      fprintf(stderr, "%s\n", buf);
      return 2;
    }
    wms_fill_store(p.store, a, b, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 24, 8);
    wms_fill_store(p.store, a + b, restricted, WM_RIGHT_PLAYBACK, 24, 8);
    m->old_count = a;
    m->new_count = (uint64_t)a + b;
    if (digest_store(p.store, &m->source) != WM_S_OK) return 2;
  } else {
    /* The backup: n licenses from another store. */
    join(src, m->tpl, "src");
    wms_fill_store(src, 0, n, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 24, 8);
    r = run_op(0, src, p.backup, 0);
    if (!op_ok(&r)) {
      describe_op(buf, sizeof buf, "template backup", &r);
      fprintf(stderr, "%s\n", buf);
      return 2;
    }
    if (m->mode == MODE_RESTORE) {
      /* The target: a quarter as many other licenses, then copies of a twentieth of the
         backup's that are older (the restore replaces them) and of another twentieth that
         are newer (the store keeps them), all with other titles. */
      wms_fill_store(p.store, 1000000, n / 4, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 24, 8);
      put_variants(p.store, 0, n / 20, "older copy", -86400);
      put_variants(p.store, n / 20, n / 20, "newer copy", 86400);
      if (digest_store(p.store, &m->before) != WM_S_OK) return 2;
    }
  }
  return write_all(fd, m, sizeof *m) == 0 ? 0 : 2;
}

/* The operation child: reports 'S', 'B', 'E'/'F' through the pipe. */
static int progress_fd = -1;

static void progress_hook(struct wms_recorder *rec, const wm_event *e, size_t index) {
  char c = 0;
  (void)rec;
  (void)index;
  if (e->status == WM_STATUS_BACKUPRESTORE_BEGIN) c = 'B';
  if (e->status == WM_STATUS_BACKUPRESTORE_END) c = e->hr == WM_S_OK ? 'E' : 'F';
  if (c) (void)write_all(progress_fd, &c, 1);
}

static int op_child(void *arg, int fd) {
  const run_paths *p = (const run_paths *)arg;
  wms_recorder rec;
  wm_backup_restorer *r = NULL;
  wm_hresult hr;
  wms_event end;
  progress_fd = fd;
  set_home(p->home);
  wms_recorder_init(&rec);
  rec.hook = progress_hook;
  REQUIRE_OK(wm_backup_restorer_create(wms_record, &rec, &r));
  REQUIRE_OK(wms_set_prop(r, WM_PROP_STORE_PATH, p->store));
  REQUIRE_OK(wms_set_prop(r, p->mode == MODE_BACKUP ? WM_PROP_BACKUP_PATH : WM_PROP_RESTORE_PATH, p->backup));
  (void)write_all(fd, "S", 1);
  switch (p->mode) {
    case MODE_BACKUP: hr = wm_backup_restorer_backup(r, WM_BACKUP_OVERWRITE); break;
    case MODE_RESTORE: hr = wm_backup_restorer_restore(r, 0); break;
    default: hr = wm_backup_restorer_restore(r, WM_RESTORE_INDIVIDUALIZE); break;
  }
  if (hr != WM_S_OK) {
    fprintf(stderr, "operation did not start: 0x%08x (%s)\n", (unsigned)hr, wm_hresult_message(hr));
    return 4;
  }
  if (!wms_wait_ends(&rec, 1, 600000)) return 5;
  end = wms_last_end(&rec);
  wm_backup_restorer_destroy(r);
  if (end.hr != WM_S_OK) {
    fprintf(stderr, "operation ended with 0x%08x (%s): %s\n", (unsigned)end.hr, wm_hresult_message(end.hr),
            end.message);
    return 3;
  }
  return 0;
}

/* What a checker child reports. */
typedef struct {
  int violated[V_COUNT];
  char detail[V_COUNT][600];
  int state;   /* 0: old backup / store before / no store; 1: new / after / complete; -1 neither */
  int litter;  /* temporary entries the kill left (before the next operation swept them) */
  wms_dump_t digest; /* calibration: the target store after the operation */
} check_report;

typedef struct {
  const mode_ctx *m;
  const run_paths *p;
  int calibration;
} check_arg;

static void violate(check_report *c, int kind, const char *fmt, const char *detail) {
  c->violated[kind] = 1;
  if (!c->detail[kind][0]) snprintf(c->detail[kind], sizeof c->detail[kind], fmt, detail);
}

/* Verifies the backup at `p->backup` without changing anything; 1 when END is S_OK with
   `total` licenses. */
static int backup_verifies(const run_paths *p, uint64_t total, char *why, size_t why_size) {
  op_result r = run_op(1, p->scratch, p->backup, WM_RESTORE_VERIFY_ONLY | WM_RESTORE_INDIVIDUALIZE);
  describe_op(why, why_size, "verifying restore", &r);
  return op_ok(&r) && r.end.total == total;
}

static void check_backup(const mode_ctx *m, const run_paths *p, check_report *c) {
  char path[PATH_MAX], why[512], names[400];
  uint8_t *bytes;
  size_t len = 0;
  wms_dump_t now;
  op_result r;
  int left;

  c->litter = list_bad_entries(p->backup, bad_in_backup_dir, NULL, names, sizeof names);
  join(path, p->backup, "licenses.wmlb");
  bytes = wms_read_file(path, &len);
  if (!bytes) {
    c->state = -1;
    violate(c, V_STATE, "%s", "no backup at BackupPath");
  } else if (len == m->old_len && memcmp(bytes, m->old_bytes, len) == 0) {
    c->state = 0;
    if (!backup_verifies(p, m->old_count, why, sizeof why)) violate(c, V_STATE, "old backup no longer verifies: %s", why);
  } else {
    c->state = 1;
    if (!backup_verifies(p, m->new_count, why, sizeof why))
      violate(c, V_STATE, "backup is not the old one and not a complete new one: %s", why);
  }
  free(bytes);

  if (digest_store(p->store, &now) != WM_S_OK || !digest_eq(now, m->source))
    violate(c, V_SOURCE, "%s", "the store backed up is not as it was");

  r = run_op(0, p->store, p->backup, WM_BACKUP_OVERWRITE);
  if (!op_ok(&r) || r.end.processed != m->new_count) {
    describe_op(why, sizeof why, "next backup", &r);
    violate(c, V_NEXT, "%s", why);
  }
  left = list_bad_entries(p->backup, bad_in_backup_dir, NULL, names, sizeof names);
  if (left != 0) violate(c, V_LEFTOVER, left < 0 ? "cannot list the backup directory%s" : "in the backup directory: %s",
                         left < 0 ? "" : names);
}

static void check_restore(const mode_ctx *m, const run_paths *p, check_report *c, int calibration) {
  char why[512], names[400], db[PATH_MAX];
  wms_dump_t now;
  op_result r;
  int left;
  uint32_t flags = p->mode == MODE_RESTORE_NEW ? WM_RESTORE_INDIVIDUALIZE : 0;

  c->litter = list_bad_entries(p->stores, is_staging_dir, p->store_name, names, sizeof names);
  join(db, p->store, "licenses.db");
  if (p->mode == MODE_RESTORE_NEW && !wmr_exists(db)) {
    /* No store: the library must say so too (a restore without INDIVIDUALIZE refuses). */
    r = run_op(1, p->store, p->backup, WM_RESTORE_VERIFY_ONLY);
    if (r.start_hr == WM_S_OK && r.end.status == WM_STATUS_BACKUPRESTORE_END &&
        r.end.hr == WM_E_NEEDS_INDIVIDUALIZATION) {
      c->state = 0;
    } else {
      c->state = -1;
      describe_op(why, sizeof why, "no licenses.db, but a restore without INDIVIDUALIZE", &r);
      violate(c, V_STATE, "%s", why);
    }
  } else {
    wm_hresult hr = digest_store(p->store, &now);
    c->digest = now;
    if (calibration) {
      c->state = hr == WM_S_OK ? 1 : -1;
    } else if (hr != WM_S_OK) {
      c->state = -1;
      snprintf(why, sizeof why, "the store does not open: 0x%08x (%s)", (unsigned)hr, wm_hresult_message(hr));
      violate(c, V_STATE, "%s", why);
    } else if (p->mode == MODE_RESTORE && digest_eq(now, m->before)) {
      c->state = 0;
    } else if (digest_eq(now, m->after)) {
      c->state = 1;
    } else {
      c->state = -1;
      snprintf(why, sizeof why, "the store holds %llu licenses (before %llu, after %llu) and is neither state",
               (unsigned long long)now.count, (unsigned long long)m->before.count,
               (unsigned long long)m->after.count);
      violate(c, V_STATE, "%s", why);
    }
  }
  if (calibration) return;

  r = run_op(1, p->store, p->backup, flags);
  if (!op_ok(&r)) {
    describe_op(why, sizeof why, "next restore", &r);
    violate(c, V_NEXT, "%s", why);
  } else if (digest_store(p->store, &now) != WM_S_OK || !digest_eq(now, m->after)) {
    violate(c, V_NEXT, "%s", "after the next restore the store is not the complete one");
  }
  left = list_bad_entries(p->stores, is_staging_dir, p->store_name, names, sizeof names);
  if (left != 0) violate(c, V_LEFTOVER, left < 0 ? "cannot list the store's parent%s" : "beside the store: %s",
                         left < 0 ? "" : names);
}

static int check_child(void *arg, int fd) {
  const check_arg *a = (const check_arg *)arg;
  check_report c;
  memset(&c, 0, sizeof c);
  alarm(900); /* a hang is a failure of the checker, not an endless run */
  set_home(a->p->home);
  if (a->p->mode == MODE_BACKUP) {
    if (a->calibration) {
      char why[512];
      c.state = backup_verifies(a->p, a->m->new_count, why, sizeof why) ? 1 : -1;
      if (c.state < 0) fprintf(stderr, "calibration: %s\n", why);
    } else {
      check_backup(a->m, a->p, &c);
    }
  } else {
    check_restore(a->m, a->p, &c, a->calibration);
  }
  return write_all(fd, &c, sizeof c) == 0 ? 0 : 2;
}

/* ---------------------------------------------------------------- parent */

typedef struct {
  unsigned runs;
  unsigned phase[PHASE_COUNT];
  unsigned violations[V_COUNT];
  unsigned runs_violating;
  unsigned litter;         /* runs whose kill left temporary entries (swept or not afterwards) */
  unsigned state_count[2]; /* old/before/absent, new/after/complete */
  double window_ms, seconds;
} mode_stats;

static void fresh_run_dir(const mode_ctx *m) {
  char p[PATH_MAX], s[PATH_MAX];
  static const char *const parts[] = {"home", "store", "backup", "stores"};
  size_t i;
  wmt_rm_rf(m->run);
  if (mkdir(m->run, 0700) != 0) {
    fprintf(stderr, "mkdir %s: %s\n", m->run, strerror(errno));
    exit(2);
  }
  for (i = 0; i < sizeof parts / sizeof parts[0]; i++) {
    join(s, m->tpl, parts[i]);
    join(p, m->run, parts[i]);
    if (wmr_exists(s)) copy_tree(s, p);
  }
}

/* One operation, killed `delay_ms` after its fork (never killed when delay_ms < 0). Returns
   the phase; *status gets the wait status, progress the bytes the child reported. */
static int run_killed(const run_paths *p, double delay_ms, int *status, double *end_ms) {
  int fds[2], st = 0;
  pid_t pid;
  char progress[64];
  size_t n, i;
  int began = 0, ended = 0;
  struct timespec t0, t;
  if (pipe(fds) != 0) {
    perror("pipe");
    exit(2);
  }
  fflush(NULL);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pid = fork();
  if (pid < 0) {
    perror("fork");
    exit(2);
  }
  if (pid == 0) {
    close(fds[0]);
    _exit(op_child((void *)p, fds[1]));
  }
  close(fds[1]);
  if (delay_ms >= 0) {
    t = ts_add_ms(t0, delay_ms);
    sleep_until(&t);
    kill(pid, SIGKILL);
    n = read_upto(fds[0], progress, sizeof progress);
  } else {
    /* Calibration: read byte by byte to time the END. */
    n = 0;
    while (n < sizeof progress && read_upto(fds[0], progress + n, 1) == 1) {
      if (progress[n] == 'E' || progress[n] == 'F') {
        clock_gettime(CLOCK_MONOTONIC, &t);
        *end_ms = ts_diff_ms(t, t0);
      }
      n++;
    }
  }
  close(fds[0]);
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  *status = st;
  for (i = 0; i < n; i++) {
    if (progress[i] == 'B') began = 1;
    if (progress[i] == 'E' || progress[i] == 'F') ended = 1;
  }
  return ended ? PHASE_AFTER : began ? PHASE_MID : PHASE_BEFORE;
}

static void print_table_header(void) {
  printf("%-12s %5s | %6s %5s %5s | %5s %6s %7s %9s %6s | %7s %6s | %8s %7s\n", "mode", "runs", "before", "mid",
         "after", "state", "source", "next-op", "leftovers", "errors", "old/bef", "new/aft", "litter", "time s");
}

static void print_table_row(const char *name, const mode_stats *s) {
  printf("%-12s %5u | %6u %5u %5u | %5u %6u %7u %9u %6u | %7u %6u | %8u %7.1f\n", name, s->runs,
         s->phase[PHASE_BEFORE], s->phase[PHASE_MID], s->phase[PHASE_AFTER], s->violations[V_STATE],
         s->violations[V_SOURCE], s->violations[V_NEXT], s->violations[V_LEFTOVER], s->violations[V_ERROR],
         s->state_count[0], s->state_count[1], s->litter, s->seconds);
}

static const char *phase_name(int ph) {
  return ph == PHASE_BEFORE ? "before BEGIN" : ph == PHASE_MID ? "mid-operation" : "after END";
}

static void run_mode(int mode, const char *root, mode_stats *st) {
  mode_ctx m;
  run_paths p;
  check_arg ca;
  check_report rep;
  size_t got;
  int status, phase;
  unsigned run, first = 0, last = opt_runs;
  double end_ms = -1;
  struct timespec t_start, t_end;
  char path[PATH_MAX];

  clock_gettime(CLOCK_MONOTONIC, &t_start);
  memset(st, 0, sizeof *st);
  memset(&m, 0, sizeof m);
  m.mode = mode;
  join(m.base, root, mode_names[mode]);
  join(m.tpl, m.base, "template");
  join(m.run, m.base, "run");
  if (mkdir(m.base, 0700) != 0 || mkdir(m.tpl, 0700) != 0) {
    fprintf(stderr, "mkdir %s: %s\n", m.base, strerror(errno));
    exit(2);
  }

  /* The template, built by a child (the parent never starts the library's threads). */
  {
    mode_ctx filled;
    status = in_child(setup_child, &m, &filled, sizeof filled, &got);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || got != sizeof filled) {
      fprintf(stderr, "%s: building the template failed (status 0x%x)\n", mode_names[mode], (unsigned)status);
      exit(2);
    }
    m.old_count = filled.old_count;
    m.new_count = filled.new_count;
    m.source = filled.source;
    m.before = filled.before;
  }
  if (mode == MODE_BACKUP) {
    join(path, m.tpl, "backup/licenses.wmlb");
    m.old_bytes = wms_read_file(path, &m.old_len);
    if (!m.old_bytes) {
      fprintf(stderr, "cannot read %s\n", path);
      exit(2);
    }
  }

  /* Calibration: one complete operation, timed from fork to END; its result is the "after"
     state of the restore modes. */
  fresh_run_dir(&m);
  paths_in(&m, m.run, &p);
  phase = run_killed(&p, -1, &status, &end_ms);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || phase != PHASE_AFTER || end_ms <= 0) {
    fprintf(stderr, "%s: the calibration run failed (status 0x%x)\n", mode_names[mode], (unsigned)status);
    exit(2);
  }
  ca.m = &m;
  ca.p = &p;
  ca.calibration = 1;
  status = in_child(check_child, &ca, &rep, sizeof rep, &got);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || got != sizeof rep || rep.state != 1) {
    fprintf(stderr, "%s: the calibration run's result is not right (status 0x%x)\n", mode_names[mode],
            (unsigned)status);
    exit(2);
  }
  m.after = rep.digest;
  m.window_ms = opt_window_ms > 0 ? opt_window_ms : 1.1 * end_ms;
  st->window_ms = m.window_ms;
  printf("%s: %u licenses; operation took %.1f ms (fork to END); kills uniform over [0, %.1f) ms; seed %" PRIu64 "\n",
         mode_names[mode], opt_licenses, end_ms, m.window_ms, opt_seed);
  if (mode == MODE_BACKUP)
    printf("%s: old backup %llu licenses, new %llu\n", mode_names[mode], (unsigned long long)m.old_count,
           (unsigned long long)m.new_count);
  else
    printf("%s: target store %llu licenses before, %llu after\n", mode_names[mode],
           (unsigned long long)m.before.count, (unsigned long long)m.after.count);
  fflush(stdout);

  if (opt_only_run >= 0) {
    first = (unsigned)opt_only_run;
    last = first + 1;
  }
  for (run = first; run < last; run++) {
    double frac = kill_fraction(opt_seed, mode, run), delay = frac * m.window_ms;
    int k, any = 0, child_error = 0;
    fresh_run_dir(&m);
    paths_in(&m, m.run, &p);
    phase = run_killed(&p, delay, &status, &end_ms);
    st->runs++;
    st->phase[phase]++;
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0) child_error = 1;

    ca.calibration = 0;
    memset(&rep, 0, sizeof rep);
    status = in_child(check_child, &ca, &rep, sizeof rep, &got);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || got != sizeof rep) {
      memset(&rep, 0, sizeof rep);
      rep.state = -1;
      violate(&rep, V_ERROR, WIFSIGNALED(status) ? "the checker died of signal %s" : "the checker failed%s",
              WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) : "");
    }
    if (child_error)
      violate(&rep, V_ERROR, "%s", "the operation failed on its own (see its message above)");
    if (rep.state == 0 || rep.state == 1) st->state_count[rep.state]++;
    if (rep.litter > 0) st->litter++;
    for (k = 0; k < V_COUNT; k++) {
      if (!rep.violated[k]) continue;
      st->violations[k]++;
      any = 1;
      printf("  %s run %u (kill at %.1f ms = %.3f of the window, %s): VIOLATION %s: %s\n", mode_names[mode], run,
             delay, frac, phase_name(phase), violation_names[k], rep.detail[k]);
    }
    if (any) {
      st->runs_violating++;
      printf("    replay: crash_harness -s %" PRIu64 " -r %u -t %.1f -l %u %s\n", opt_seed, run, m.window_ms,
             opt_licenses, mode_names[mode]);
      if (opt_keep) {
        char kept[PATH_MAX + 32];
        snprintf(kept, sizeof kept, "%s/failed-run-%u", m.base, run);
        if (rename(m.run, kept) == 0) printf("    kept: %s\n", kept);
      }
    }
    if ((run + 1 - first) % 50 == 0 && run + 1 < last) {
      printf("%s: %u/%u runs done: %u mid-operation kills, %u run(s) with violations\n", mode_names[mode],
             run + 1 - first, last - first, st->phase[PHASE_MID], st->runs_violating);
    }
    fflush(stdout);
  }
  free(m.old_bytes);
  if (!opt_keep) wmt_rm_rf(m.base);
  clock_gettime(CLOCK_MONOTONIC, &t_end);
  st->seconds = ts_diff_ms(t_end, t_start) / 1000.0;
  /* The mode's figures at once, so that an interrupted run of several modes keeps them. */
  printf("%s done:\n", mode_names[mode]);
  print_table_header();
  print_table_row(mode_names[mode], st);
  fflush(stdout);
}

static void usage(void) {
  fprintf(stderr,
          "usage: crash_harness [-n RUNS] [-s SEED] [-l LICENSES] [-r RUN] [-t WINDOW_MS] [-k] MODE...\n"
          "  MODE: backup | restore | restore-new | all\n"
          "  -n runs per mode (default 200)     -s seed (default: from the time)\n"
          "  -l licenses (default 20000)        -r only this run (replay)\n"
          "  -t kill window in ms (default: 1.1 x a timed operation)\n"
          "  -k keep the directories of runs with violations\n");
  exit(2);
}

int main(int argc, char **argv) {
  int opt, i, k, modes[MODE_COUNT], nmodes = 0, seeded = 0;
  mode_stats stats[MODE_COUNT];
  char root[PATH_MAX];
  unsigned total_violations = 0;

  while ((opt = getopt(argc, argv, "n:s:l:r:t:kh")) != -1) {
    switch (opt) {
      case 'n': opt_runs = (unsigned)strtoul(optarg, NULL, 10); break;
      case 's': opt_seed = (uint64_t)strtoull(optarg, NULL, 10); seeded = 1; break;
      case 'l': opt_licenses = (unsigned)strtoul(optarg, NULL, 10); break;
      case 'r': opt_only_run = strtol(optarg, NULL, 10); break;
      case 't': opt_window_ms = strtod(optarg, NULL); break;
      case 'k': opt_keep = 1; break;
      default: usage();
    }
  }
  if (optind >= argc || opt_licenses < 40) usage();
  for (i = optind; i < argc; i++) {
    int found = 0, all = strcmp(argv[i], "all") == 0;
    for (k = 0; k < MODE_COUNT; k++) {
      int j, dup = 0;
      if (!all && strcmp(argv[i], mode_names[k]) != 0) continue;
      found = 1;
      for (j = 0; j < nmodes; j++) dup |= modes[j] == k;
      if (!dup) modes[nmodes++] = k;
    }
    if (!found) usage();
  }
  if (!seeded) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    opt_seed = splitmix64(((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^ ((uint64_t)getpid() << 32));
  }
  printf("crash_harness: seed %" PRIu64 ", %u runs per mode, %u licenses\n", opt_seed,
         opt_only_run >= 0 ? 1u : opt_runs, opt_licenses);
  fflush(stdout);

  wmt_temp_dir(root, sizeof root, "crash");
  for (i = 0; i < nmodes; i++) run_mode(modes[i], root, &stats[i]);
  if (!opt_keep) wmt_rm_rf(root);

  printf("\ncrash_harness summary (seed %" PRIu64 ", %u licenses)\n", opt_seed, opt_licenses);
  print_table_header();
  for (i = 0; i < nmodes; i++) {
    print_table_row(mode_names[modes[i]], &stats[i]);
    for (k = 0; k < V_COUNT; k++) total_violations += stats[i].violations[k];
  }
  printf("kills: before BEGIN / mid-operation / after END. violations by kind: state (backup neither old\n"
         "nor complete new, store neither before nor after), source (store backed up changed), next-op\n"
         "(the next operation there failed), leftovers (not swept by the next operation), errors.\n"
         "old/bef, new/aft: what the checks found after the kill. litter: runs whose kill left\n"
         "temporary entries (the next operation must sweep them).\n");
  printf("result: %s (%u violation(s)); seed %" PRIu64 "\n", total_violations ? "FAIL" : "PASS", total_violations,
         opt_seed);
  return total_violations ? 1 : 0;
}
