/* Damaged backups (SPEC §5: "Any flipped, cut, added or reordered byte → WM_E_BACKUP_CORRUPT,
   detected before the import commits"; §4: a failed restore leaves the store exactly as it was;
   a backup whose header is already wrong ends with END before CONNECTING).

   A backup of 300 licenses with titles of 400..799 bytes (about 180 KB of plaintext: three
   chunks of up to 64 KiB) is damaged in many ways: every header byte flipped, 120 positions spread over
   the chunks, the last 8 bytes, every chunk length word, the last-chunk flag of every chunk,
   cuts, an appended byte, swapped / dropped / duplicated chunks, a chunk of another backup,
   random bytes, text, an empty file, a missing file, a directory without a backup. Each one is
   restored (one restorer, reused) into a store holding 3 licenses of its own: END must carry
   WM_E_BACKUP_CORRUPT and the store's dump (count + checksum of every field and content key)
   must not change. The intact file verifies (WM_RESTORE_VERIFY_ONLY) before and restores for
   real after all of it. With WMLICENSE_TEST_QUICK (valgrind) only about 30 single-byte changes
   are tried. */
#include "stress_util.h"

#define N_LICENSES 300u
/* The header's length, from its length field (bytes 10..11): format version 2 carries a table
   of the licenses' lineages, so it depends on the store (here: one lineage, 196 bytes). */
#define HEADER_LEN g_header_len
static size_t g_header_len;
#define OWN_FIRST 90000000u

typedef struct {
  size_t at;   /* offset of the length word */
  size_t size; /* 4 (length word) + 4 (license count) + ciphertext length + 16 (verify tag) */
  int last;
} chunk;

static wm_backup_restorer *g_r;
static wms_recorder g_rec;
static char g_target[600];
static wms_dump_t g_before;
static int g_cases, g_failed_cases, g_before_connect, g_at_service, g_during_import;
/* What the next restores must end with: WM_E_BACKUP_CORRUPT, or WM_E_FILE_NOT_FOUND where there
   is no backup at all. */
static wm_hresult g_expect_hr = WM_E_BACKUP_CORRUPT;

enum expect { ANY = 0, NO_CONNECT = 1, AT_SERVICE = 2, IN_IMPORT = 3 };

/* Restores whatever RestorePath names now into the target store and checks the outcome. */
static void restore_expect_corrupt(const char *label, enum expect how) {
  wms_event evs[64];
  size_t n, i;
  int failures = wmt_failures, connecting = 0, disconnecting = 0, progress = 0, other = 0;
  wms_event end;
  wms_dump_t now;

  g_cases++;
  wms_recorder_reset(&g_rec);
  CHECK_HR(wm_backup_restorer_restore(g_r, 0), WM_S_OK);
  if (!wms_wait_ends(&g_rec, 1, 120000)) {
    fprintf(stderr, "%s: no END within 120 s\n", label);
    wms_dump_events(&g_rec, label);
    _exit(1);
  }
  CHECK_HR(wm_backup_restorer_wait(g_r, WM_INFINITE), WM_S_OK);
  end = wms_last_end(&g_rec);
  CHECK_HR(end.hr, g_expect_hr);
  wms_check_shape(&g_rec, WM_OPERATION_RESTORE, label);
  n = wms_snapshot(&g_rec, evs, 64);
  for (i = 0; i < n; i++) {
    switch (evs[i].status) {
      case WM_STATUS_BACKUPRESTORE_CONNECTING: connecting++; break;
      case WM_STATUS_BACKUPRESTORE_DISCONNECTING: disconnecting++; break;
      case WM_STATUS_BACKUPRESTORE_PROGRESS: progress++; break;
      case WM_STATUS_BACKUPRESTORE_BEGIN:
      case WM_STATUS_BACKUPRESTORE_END: break;
      default: other++; break;
    }
  }
  CHECK(other == 0);
  CHECK(connecting == disconnecting && connecting <= 1);
  if (connecting) {
    CHECK(n >= 4 && evs[1].status == WM_STATUS_BACKUPRESTORE_CONNECTING &&
          evs[2].status == WM_STATUS_BACKUPRESTORE_DISCONNECTING);
  }
  if (!connecting) {
    CHECK(progress == 0);
    g_before_connect++;
  } else if (!progress) {
    g_at_service++;
  } else {
    g_during_import++;
  }
  switch (how) {
    case NO_CONNECT: CHECK(n == 2 && connecting == 0); break;
    case AT_SERVICE: CHECK(connecting == 1 && progress == 0); break;
    case IN_IMPORT: CHECK(connecting == 1); break;
    case ANY: break;
  }
  CHECK(end.message[0] != '\0');
  now = wms_dump_store(g_target);
  CHECK(now.count == g_before.count);
  CHECK(now.sum == g_before.sum);
  if (wmt_failures != failures) {
    g_failed_cases++;
    fprintf(stderr, "  ^ case: %s (END hr 0x%08x \"%s\")\n", label, (unsigned)end.hr, end.message);
    wms_dump_events(&g_rec, label);
  }
}

static void file_case(const char *path, const uint8_t *bytes, size_t len, const char *label,
                      enum expect how) {
  wms_write_file(path, bytes, len);
  restore_expect_corrupt(label, how);
}

/* Splits a backup into its chunks; returns the number found (0 when the layout is not what
   the format says). */
static size_t parse_chunks(const uint8_t *b, size_t len, chunk *out, size_t max) {
  size_t at = HEADER_LEN, n = 0;
  while (at < len) {
    uint32_t word;
    if (at + 4 > len || n == max) return 0;
    word = (uint32_t)b[at] | (uint32_t)b[at + 1] << 8 | (uint32_t)b[at + 2] << 16 |
           (uint32_t)b[at + 3] << 24;
    out[n].at = at;
    out[n].size = 4 + 4 + (word & 0x7FFFFFFFu) + 16;
    out[n].last = (word & 0x80000000u) != 0;
    at += out[n].size;
    n++;
    if (out[n - 1].last) break;
  }
  return at == len ? n : 0;
}

static uint32_t g_rand = 12345u;
static uint8_t next_random(void) {
  g_rand = g_rand * 1103515245u + 12345u;
  return (uint8_t)(g_rand >> 16);
}

int main(void) {
  char home[512], src[600], dir[600], dir2[600], empty_dir[600], intact[700], bad[700], label[200];
  uint8_t *a = NULL, *b2 = NULL, *buf = NULL;
  size_t len = 0, len2 = 0, nchunks, nchunks2, i, k;
  chunk ch[64], ch2[64];
  double t_all = wms_now_ms(), t;
  wms_event end;
  unsigned positions = 0;
  const int quick = wms_quick();
  const size_t spread = quick ? 6 : 120;

  wms_fresh_home(home, sizeof home, "corruption");
  snprintf(src, sizeof src, "%s/source-store", home);
  snprintf(dir, sizeof dir, "%s/backup", home);
  snprintf(dir2, sizeof dir2, "%s/backup-2", home);
  snprintf(empty_dir, sizeof empty_dir, "%s/no-backup-here", home);
  snprintf(g_target, sizeof g_target, "%s/target-store", home);
  snprintf(intact, sizeof intact, "%s/intact-copy.wmlb", home);
  snprintf(bad, sizeof bad, "%s/damaged.wmlb", home);
  mkdir(empty_dir, 0700);

  wms_fill_store(src, 0, N_LICENSES, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 400, 400);
  wms_fill_store(g_target, OWN_FIRST, 3, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 20, 3);
  g_before = wms_dump_store(g_target);
  CHECK(g_before.count == 3);

  wms_recorder_init(&g_rec);
  REQUIRE_OK(wm_backup_restorer_create(wms_record, &g_rec, &g_r));
  REQUIRE_OK(wms_set_prop(g_r, WM_PROP_STORE_PATH, src));
  REQUIRE_OK(wms_set_prop(g_r, WM_PROP_BACKUP_PATH, dir));
  CHECK_HR(wm_backup_restorer_backup(g_r, 0), WM_S_OK);
  CHECK_HR(wm_backup_restorer_wait(g_r, WM_INFINITE), WM_S_OK);
  CHECK_HR(wms_last_end(&g_rec).hr, WM_S_OK);
  /* A second backup of the same store: its chunks are sealed under another data key. */
  wms_recorder_reset(&g_rec);
  REQUIRE_OK(wms_set_prop(g_r, WM_PROP_BACKUP_PATH, dir2));
  CHECK_HR(wm_backup_restorer_backup(g_r, 0), WM_S_OK);
  CHECK_HR(wm_backup_restorer_wait(g_r, WM_INFINITE), WM_S_OK);
  CHECK_HR(wms_last_end(&g_rec).hr, WM_S_OK);

  {
    char path[700];
    snprintf(path, sizeof path, "%s/licenses.wmlb", dir);
    a = wms_read_file(path, &len);
    snprintf(path, sizeof path, "%s/licenses.wmlb", dir2);
    b2 = wms_read_file(path, &len2);
  }
  if (!a || !b2) {
    fprintf(stderr, "the backups were not written\n");
    return 1;
  }
  g_header_len = len >= 12 ? (size_t)a[10] | (size_t)a[11] << 8 : 0;
  CHECK(a[8] == 2 && a[9] == 0); /* format version 2 */
  nchunks = parse_chunks(a, len, ch, 64);
  nchunks2 = parse_chunks(b2, len2, ch2, 64);
  printf("test_corruption: backup of %u licenses, %zu bytes in %zu chunks\n", N_LICENSES, len,
         nchunks);
  CHECK(nchunks >= 3);
  CHECK(nchunks2 == nchunks);
  for (i = 0; i < nchunks; i++) CHECK(ch[i].last == (i + 1 == nchunks));
  if (nchunks < 3 || nchunks2 != nchunks) return wmt_finish("test_corruption");
  wms_write_file(intact, a, len);
  buf = (uint8_t *)malloc(len * 2 + 16);
  if (!buf) return 1;

  /* The intact file verifies against the target store (and changes nothing). */
  REQUIRE_OK(wms_set_prop(g_r, WM_PROP_STORE_PATH, g_target));
  REQUIRE_OK(wms_set_prop(g_r, WM_PROP_RESTORE_PATH, intact));
  wms_recorder_reset(&g_rec);
  CHECK_HR(wm_backup_restorer_restore(g_r, WM_RESTORE_VERIFY_ONLY), WM_S_OK);
  CHECK_HR(wm_backup_restorer_wait(g_r, WM_INFINITE), WM_S_OK);
  end = wms_last_end(&g_rec);
  CHECK_HR(end.hr, WM_S_OK);
  CHECK(end.total == N_LICENSES && end.processed == N_LICENSES);
  {
    wms_dump_t d = wms_dump_store(g_target);
    CHECK(d.count == g_before.count && d.sum == g_before.sum);
  }

  t = wms_now_ms();
  REQUIRE_OK(wms_set_prop(g_r, WM_PROP_RESTORE_PATH, bad));

  /* 1. Every header byte flipped (quick runs: the magic and every 24th byte). */
  for (i = 0; i < HEADER_LEN; i++) {
    if (quick && i >= 8 && i % 24 != 8) continue;
    memcpy(buf, a, len);
    buf[i] ^= 0x01;
    snprintf(label, sizeof label, "header byte %zu ^ 0x01", i);
    file_case(bad, buf, len, label, i < 8 ? NO_CONNECT : ANY);
    positions++;
  }
  /* 2. 120 positions (quick: 6) spread over the chunks, and the last 8 bytes (quick: 2). */
  for (k = 0; k < spread; k++) {
    size_t pos = HEADER_LEN + (len - HEADER_LEN - 8) * k / spread + k % 7;
    memcpy(buf, a, len);
    buf[pos] ^= 0x01;
    snprintf(label, sizeof label, "body byte %zu ^ 0x01", pos);
    file_case(bad, buf, len, label, IN_IMPORT);
    positions++;
  }
  for (i = len - (quick ? 2 : 8); i < len; i++) {
    memcpy(buf, a, len);
    buf[i] ^= 0x01;
    snprintf(label, sizeof label, "tail byte %zu of %zu ^ 0x01", i, len);
    file_case(bad, buf, len, label, IN_IMPORT);
    positions++;
  }
  /* 3. Every byte of every chunk length word, and every last-chunk flag. */
  for (k = 0; k < nchunks; k++) {
    if (quick && k != 0 && k + 1 != nchunks) continue;
    for (i = 0; i < 4; i++) {
      if (quick && i != 0 && i != 3) continue;
      memcpy(buf, a, len);
      buf[ch[k].at + i] ^= 0x01;
      snprintf(label, sizeof label, "chunk %zu length word byte %zu ^ 0x01", k, i);
      file_case(bad, buf, len, label, IN_IMPORT);
      positions++;
    }
    memcpy(buf, a, len);
    buf[ch[k].at + 3] ^= 0x80;
    snprintf(label, sizeof label, "chunk %zu last-chunk flag flipped", k);
    file_case(bad, buf, len, label, IN_IMPORT);
    positions++;
  }
  printf("  %u single-byte changes: %.0f ms\n", positions, wms_now_ms() - t);

  /* 4. Cuts. */
  {
    size_t cuts[] = {0, 100, HEADER_LEN - 1, HEADER_LEN, HEADER_LEN + 2, 180, 0, 0, 0};
    size_t ncuts = 6;
    cuts[ncuts++] = len / 2;
    cuts[ncuts++] = len - 1;
    cuts[ncuts++] = ch[nchunks - 1].at; /* exactly at a chunk boundary: the last chunk is gone */
    for (i = 0; i < ncuts; i++) {
      snprintf(label, sizeof label, "cut to %zu of %zu bytes", cuts[i], len);
      file_case(bad, a, cuts[i], label, cuts[i] < HEADER_LEN ? NO_CONNECT : IN_IMPORT);
    }
  }
  /* 5. Additions. */
  memcpy(buf, a, len);
  buf[len] = 0x00;
  file_case(bad, buf, len + 1, "one byte appended", IN_IMPORT);
  memcpy(buf, a, len);
  memcpy(buf + len, a + ch[nchunks - 1].at, ch[nchunks - 1].size);
  file_case(bad, buf, len + ch[nchunks - 1].size, "last chunk appended twice", IN_IMPORT);
  /* 6. Reordering. */
  {
    size_t at;
    /* chunks 0 and 1 swapped (both full, neither last) */
    memcpy(buf, a, HEADER_LEN);
    at = HEADER_LEN;
    memcpy(buf + at, a + ch[1].at, ch[1].size), at += ch[1].size;
    memcpy(buf + at, a + ch[0].at, ch[0].size), at += ch[0].size;
    memcpy(buf + at, a + ch[2].at, len - ch[2].at), at += len - ch[2].at;
    CHECK(at == len);
    file_case(bad, buf, len, "chunks 0 and 1 swapped", IN_IMPORT);
    /* the last chunk and the one before it swapped */
    memcpy(buf, a, ch[nchunks - 2].at);
    at = ch[nchunks - 2].at;
    memcpy(buf + at, a + ch[nchunks - 1].at, ch[nchunks - 1].size), at += ch[nchunks - 1].size;
    memcpy(buf + at, a + ch[nchunks - 2].at, ch[nchunks - 2].size), at += ch[nchunks - 2].size;
    CHECK(at == len);
    file_case(bad, buf, len, "last two chunks swapped", IN_IMPORT);
    /* chunk 1 dropped */
    memcpy(buf, a, ch[1].at);
    memcpy(buf + ch[1].at, a + ch[2].at, len - ch[2].at);
    file_case(bad, buf, len - ch[1].size, "chunk 1 dropped", IN_IMPORT);
    /* chunk 0 duplicated */
    memcpy(buf, a, ch[1].at);
    memcpy(buf + ch[1].at, a + ch[0].at, ch[0].size);
    memcpy(buf + ch[1].at + ch[0].size, a + ch[1].at, len - ch[1].at);
    file_case(bad, buf, len + ch[0].size, "chunk 0 duplicated", IN_IMPORT);
    /* chunk 1 taken from another backup of the same store */
    if (ch2[1].size == ch[1].size) {
      memcpy(buf, a, len);
      memcpy(buf + ch[1].at, b2 + ch2[1].at, ch2[1].size);
      file_case(bad, buf, len, "chunk 1 from another backup", IN_IMPORT);
    }
    /* the header of the other backup on these chunks, and this header on the other's chunks */
    if (len2 == len) {
      memcpy(buf, b2, HEADER_LEN);
      memcpy(buf + HEADER_LEN, a + HEADER_LEN, len - HEADER_LEN);
      file_case(bad, buf, len, "header of another backup", IN_IMPORT);
      memcpy(buf, a, HEADER_LEN);
      memcpy(buf + HEADER_LEN, b2 + HEADER_LEN, len - HEADER_LEN);
      file_case(bad, buf, len, "chunks of another backup", IN_IMPORT);
    }
  }
  /* 7. Not a backup at all. */
  for (i = 0; i < len; i++) buf[i] = next_random();
  file_case(bad, buf, len, "random bytes (backup-sized)", NO_CONNECT);
  file_case(bad, buf, 1000, "random bytes (1000)", NO_CONNECT);
  memcpy(buf, a, 12); /* right magic, version and header length; the rest random */
  file_case(bad, buf, len, "valid-looking header prefix, random rest", ANY);
  {
    const char *text = "This is not a wmlicense backup.\nJust a text file with a few lines.\n"
                       "licenses: 300\nWMLB? no.\n";
    file_case(bad, (const uint8_t *)text, strlen(text), "text file", NO_CONNECT);
  }
  file_case(bad, buf, 0, "empty file", NO_CONNECT);
  remove(bad);
  g_expect_hr = WM_E_FILE_NOT_FOUND;
  restore_expect_corrupt("missing file", NO_CONNECT);
  REQUIRE_OK(wms_set_prop(g_r, WM_PROP_RESTORE_PATH, empty_dir));
  restore_expect_corrupt("directory without licenses.wmlb", NO_CONNECT);
  g_expect_hr = WM_E_BACKUP_CORRUPT;

  printf("  %d damaged backups restored: %d ended before CONNECTING, %d at the service, %d during "
         "the import; %d case(s) failed\n",
         g_cases, g_before_connect, g_at_service, g_during_import, g_failed_cases);
  printf("  all damaged restores: %.0f ms\n", wms_now_ms() - t);

  /* The intact backup still restores into the target store, through the same restorer. */
  REQUIRE_OK(wms_set_prop(g_r, WM_PROP_RESTORE_PATH, intact));
  wms_recorder_reset(&g_rec);
  CHECK_HR(wm_backup_restorer_restore(g_r, 0), WM_S_OK);
  CHECK_HR(wm_backup_restorer_wait(g_r, WM_INFINITE), WM_S_OK);
  end = wms_last_end(&g_rec);
  CHECK_HR(end.hr, WM_S_OK);
  CHECK(end.total == N_LICENSES && end.processed == N_LICENSES && end.skipped == 0);
  wms_check_shape(&g_rec, WM_OPERATION_RESTORE, "intact restore");
  CHECK(wms_store_count(g_target) == N_LICENSES + 3);
  {
    wms_dump_t all = wms_dump_store(g_target), src_dump = wms_dump_store(src);
    CHECK(src_dump.count == N_LICENSES);
    CHECK(all.count == N_LICENSES + 3);
  }

  wm_backup_restorer_destroy(g_r);
  wms_recorder_free(&g_rec);
  free(a);
  free(b2);
  free(buf);
  wmt_rm_rf(home);
  printf("  test_corruption total: %.0f ms\n", wms_now_ms() - t_all);
  return wmt_finish("test_corruption");
}
