/* Backup and restore end to end through the C API: the exact event sequences and counters,
   RESTRICTED_LICENSE events with their exact key IDs and titles, delivery on a worker thread,
   a restore into a new store that yields exactly the backed-up licenses (content keys
   included), WM_BACKUP_OVERWRITE, WM_E_BACKUPRESTORE_BUSY while a large backup runs, cancel
   with nothing running, and the call-time failures (flags, unset paths) that start nothing. */
#include "restorer_util.h"

#define NLIC 6

static const uint8_t kid_zero[1] = {0x00};
static const uint8_t kid_restricted_a[3] = {0x00, 0x00, 0x01};
static const uint8_t kid_binary[5] = {0x00, 0xFF, 0x10, 0x00, 0x7F};
static const uint8_t kid_ff[2] = {0xFF, 0x00};
static const char kid_plain[] = "kid-plain";
static uint8_t kid_restricted_b[64]; /* 0xAB, 0x00, 0x01, ... */
static uint8_t key64[64];
static const uint8_t key16[16] = {0x10, 0x00, 0x21, 0x32, 0x43, 0x54, 0x65, 0x76,
                                  0x87, 0x98, 0xA9, 0xBA, 0xCB, 0xDC, 0xED, 0x00};
static const uint8_t key1[1] = {0x00};

static void make_licenses(wm_license l[NLIC]) {
  size_t i;
  kid_restricted_b[0] = 0xAB;
  for (i = 1; i < 64; i++) kid_restricted_b[i] = (uint8_t)(i % 3 == 0 ? 0x00 : i);
  for (i = 0; i < 64; i++) key64[i] = (uint8_t)(255 - i * 3);
  /* Backed up: 0, 2, 3, 5. Restricted (no WM_RIGHT_BACKUP): 1, 4. */
  l[0] = wmr_license(kid_zero, sizeof kid_zero, key16, sizeof key16, "Zero",
                     WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, -1, 0, 0, 1700000000);
  l[1] = wmr_license(kid_restricted_a, sizeof kid_restricted_a, key1, sizeof key1, NULL,
                     WM_RIGHT_PLAYBACK, 5, 0, 0, 1700000001);
  l[2] = wmr_license(kid_binary, sizeof kid_binary, key64, sizeof key64,
                     "Kind of Blue \xE2\x80\x94 So What",
                     WM_RIGHT_PLAYBACK | WM_RIGHT_COPY_TO_CD | WM_RIGHT_BACKUP, 3, 1600000000,
                     4102444800, 1650000000);
  l[3] = wmr_license((const uint8_t *)kid_plain, strlen(kid_plain), key16, 7, NULL,
                     0x3FB /* every right */, 0, 0, 0, 0);
  l[4] = wmr_license(kid_restricted_b, sizeof kid_restricted_b, key64, 32, "Restricted \xC3\xA9t\xC3\xA9",
                     WM_RIGHT_PLAYBACK | WM_RIGHT_COPY | WM_RIGHT_ONE_TIME, 1, 1500000000, 0, 1500000000);
  l[5] = wmr_license(kid_ff, sizeof kid_ff, key64 + 10, 20, "",
                     WM_RIGHT_BACKUP | WM_RIGHT_COLLABORATIVE_PLAY | WM_RIGHT_SAVE_STREAM_PROTECTED, 2147483647,
                     1, 4102444800, 3);
}

static void check_restricted(const wmr_event *e, const wm_license *l) {
  CHECK(e != NULL);
  if (!e) return;
  CHECK(e->status == WM_STATUS_RESTRICTED_LICENSE);
  CHECK(e->key_id_len == l->key_id_len);
  CHECK(e->key_id != NULL && e->key_id_len == l->key_id_len && memcmp(e->key_id, l->key_id, l->key_id_len) == 0);
  if (l->title) {
    CHECK(e->title != NULL && strcmp(e->title, l->title) == 0);
  } else {
    CHECK(e->title == NULL);
  }
  CHECK_HR(e->hr, WM_S_OK);
}

/* The store at `path` holds exactly the licenses `want[i]` with `pick[i]` set. */
static void check_store_holds(const char *path, const wm_license *want, const int *pick, size_t n) {
  wmr_dump_t d;
  size_t i, expected = 0;
  CHECK_HR(wmr_dump(path, &d), WM_S_OK);
  for (i = 0; i < n; i++) {
    const wmr_lic *got = wmr_dump_find(&d, want[i].key_id, want[i].key_id_len);
    if (pick[i]) {
      expected++;
      CHECK(got != NULL);
      if (got) CHECK(wmr_lic_is(got, &want[i]));
    } else {
      CHECK(got == NULL);
    }
  }
  CHECK(d.n == expected);
  wmr_dump_free(&d);
}

int main(void) {
  char home[512], src[600], bdir[600], r1[600], r2[600], big[600], bigbak[600], wmlb[700];
  wm_license lic[NLIC + 1];
  int pick[NLIC + 1] = {1, 0, 1, 1, 0, 1, 0};
  wmr_recorder rec;
  wm_backup_restorer *r;
  uint8_t *first = NULL, *again = NULL, *second = NULL;
  size_t first_len = 0, again_len = 0, second_len = 0;
  char kid_new[32];
  uint8_t key_new[16];

  wmr_fresh_home(home, sizeof home, "bkrs");
  snprintf(src, sizeof src, "%s/source", home);
  snprintf(bdir, sizeof bdir, "%s/backup", home);
  snprintf(r1, sizeof r1, "%s/restored-1", home);
  snprintf(r2, sizeof r2, "%s/restored-2", home);
  snprintf(big, sizeof big, "%s/big", home);
  snprintf(bigbak, sizeof bigbak, "%s/big-backup", home);
  snprintf(wmlb, sizeof wmlb, "%s/licenses.wmlb", bdir);

  make_licenses(lic);
  REQUIRE_OK(wmr_put(src, lic, NLIC));
  {
    int all[NLIC] = {1, 1, 1, 1, 1, 1};
    check_store_holds(src, lic, all, NLIC); /* the source round-trips every field */
  }

  wmr_init(&rec);
  r = wmr_create(&rec);
  CHECK(r != NULL);

  /* Cancel with nothing running. */
  CHECK_HR(wm_backup_restorer_cancel_backup(r), WM_S_FALSE);
  CHECK_HR(wm_backup_restorer_cancel_restore(r), WM_S_FALSE);

  /* Call-time failures: unset paths, bad flags. Nothing starts, no event arrives. */
  CHECK_HR(wm_backup_restorer_backup(r, 0), WM_E_INVALID_PROPERTY);
  CHECK_HR(wm_backup_restorer_restore(r, 0), WM_E_INVALID_PROPERTY);
  CHECK_HR(wm_backup_restorer_restore(r, WM_RESTORE_INDIVIDUALIZE), WM_E_INVALID_PROPERTY);
  CHECK_HR(wmr_set_str(r, WM_PROP_STORE_PATH, src), WM_S_OK);
  CHECK_HR(wm_backup_restorer_backup(r, WM_BACKUP_OVERWRITE), WM_E_INVALID_PROPERTY); /* StorePath alone */
  CHECK_HR(wm_backup_restorer_restore(r, 0), WM_E_INVALID_PROPERTY);
  CHECK_HR(wmr_set_str(r, WM_PROP_BACKUP_PATH, bdir), WM_S_OK);
  CHECK_HR(wm_backup_restorer_restore(r, 0), WM_E_INVALID_PROPERTY); /* BackupPath is not RestorePath */
  CHECK_HR(wm_backup_restorer_backup(r, 0x4), WM_E_INVALIDARG);
  CHECK_HR(wm_backup_restorer_backup(r, WM_RESTORE_INDIVIDUALIZE), WM_E_INVALIDARG); /* a restore flag */
  CHECK_HR(wm_backup_restorer_backup(r, WM_RESTORE_VERIFY_ONLY), WM_E_INVALIDARG);
  CHECK_HR(wm_backup_restorer_backup(r, 0x80000000u | WM_BACKUP_OVERWRITE), WM_E_INVALIDARG);
  CHECK_HR(wmr_set_str(r, WM_PROP_RESTORE_PATH, bdir), WM_S_OK);
  CHECK_HR(wm_backup_restorer_restore(r, 0x1), WM_E_INVALIDARG);
  CHECK_HR(wm_backup_restorer_restore(r, 0x4 | WM_RESTORE_INDIVIDUALIZE), WM_E_INVALIDARG);
  CHECK_HR(wm_backup_restorer_restore(r, 0x80000000u), WM_E_INVALIDARG);
  CHECK(wmr_settle(r, &rec) == 0);
  CHECK(!wmr_exists(wmlb)); /* no backup was started */

  /* Backup: BEGIN, RESTRICTED_LICENSE x2 (key-ID order), PROGRESS, END. */
  CHECK_HR(wmr_run_backup(r, &rec, 0), WM_S_OK);
  CHECK_EVENTS(&rec, WM_OPERATION_BACKUP);
  CHECK_SEQ(&rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_RESTRICTED_LICENSE, WM_STATUS_RESTRICTED_LICENSE,
            WM_STATUS_BACKUPRESTORE_PROGRESS, WM_STATUS_BACKUPRESTORE_END);
  check_restricted(wmr_at(&rec, 1), &lic[1]); /* 00 00 01 sorts before AB ... */
  check_restricted(wmr_at(&rec, 2), &lic[4]);
  {
    const wmr_event *p = wmr_find_status(&rec, WM_STATUS_BACKUPRESTORE_PROGRESS);
    CHECK(p != NULL && p->processed == 4 && p->total == 6);
  }
  CHECK_END(&rec, WM_S_OK, 4, 6, 2);
  CHECK(wmr_end(&rec).message == NULL);
  CHECK(wmr_exists(wmlb));
  CHECK(wmr_dir_count_prefix(bdir, ".licenses.wmlb.") <= 1); /* at most the lock file, no temp file */
  {
    int tmp_files = 0;
    DIR *d = opendir(bdir);
    struct dirent *de;
    CHECK(d != NULL);
    while (d && (de = readdir(d)) != NULL) {
      size_t len = strlen(de->d_name);
      if (len > 4 && strcmp(de->d_name + len - 4, ".tmp") == 0) tmp_files++;
    }
    if (d) closedir(d);
    CHECK(tmp_files == 0);
  }
  CHECK(wmr_read_file(wmlb, &first, &first_len) == 0);
  CHECK(first_len > 0);
  {
    /* No content key appears in the clear in the backup file. */
    size_t i;
    int found = 0;
    for (i = 0; first && i + sizeof key16 <= first_len; i++)
      if (memcmp(first + i, key16, sizeof key16) == 0 || (i + 64 <= first_len && memcmp(first + i, key64, 64) == 0))
        found = 1;
    CHECK(!found);
  }

  /* Restore into a new store with WM_RESTORE_INDIVIDUALIZE. */
  CHECK(!wmr_exists(r1));
  CHECK_HR(wmr_set_str(r, WM_PROP_STORE_PATH, r1), WM_S_OK);
  CHECK_HR(wmr_run_restore(r, &rec, WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
  CHECK_EVENTS(&rec, WM_OPERATION_RESTORE);
  CHECK_SEQ(&rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
            WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_PROGRESS, WM_STATUS_BACKUPRESTORE_END);
  {
    const wmr_event *p = wmr_find_status(&rec, WM_STATUS_BACKUPRESTORE_PROGRESS);
    CHECK(p != NULL && p->processed == 4 && p->total == 4);
  }
  CHECK_END(&rec, WM_S_OK, 4, 4, 0);
  CHECK(wmr_end(&rec).message == NULL);
  check_store_holds(r1, lic, pick, NLIC);
  CHECK(wmr_dir_count_prefix(home, ".restored-1") == 0); /* no staging directory left behind */

  /* A second backup without WM_BACKUP_OVERWRITE: refused by the call, nothing starts. */
  CHECK_HR(wmr_set_str(r, WM_PROP_STORE_PATH, src), WM_S_OK);
  wmr_clear(&rec);
  CHECK_HR(wm_backup_restorer_backup(r, 0), WM_E_BACKUP_EXISTS);
  CHECK(wmr_settle(r, &rec) == 0);
  CHECK(wmr_read_file(wmlb, &again, &again_len) == 0);
  CHECK(again_len == first_len && first && again && memcmp(first, again, first_len) == 0);

  /* With WM_BACKUP_OVERWRITE, after adding a license: the new backup replaces the old. */
  {
    wm_license extra;
    wmt_make_license(&extra, 77, kid_new, key_new, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP);
    extra.title = "Added later";
    lic[NLIC] = extra;
    pick[NLIC] = 1;
    REQUIRE_OK(wmr_put(src, &extra, 1));
  }
  CHECK_HR(wmr_run_backup(r, &rec, WM_BACKUP_OVERWRITE), WM_S_OK);
  CHECK_EVENTS(&rec, WM_OPERATION_BACKUP);
  CHECK_SEQ(&rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_RESTRICTED_LICENSE, WM_STATUS_RESTRICTED_LICENSE,
            WM_STATUS_BACKUPRESTORE_PROGRESS, WM_STATUS_BACKUPRESTORE_END);
  check_restricted(wmr_at(&rec, 1), &lic[1]);
  check_restricted(wmr_at(&rec, 2), &lic[4]);
  CHECK_END(&rec, WM_S_OK, 5, 7, 2);
  CHECK(wmr_read_file(wmlb, &second, &second_len) == 0);
  CHECK(second != NULL && first != NULL && (second_len != first_len || memcmp(first, second, first_len) != 0));

  CHECK_HR(wmr_set_str(r, WM_PROP_STORE_PATH, r2), WM_S_OK);
  CHECK_HR(wmr_run_restore(r, &rec, WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
  CHECK_EVENTS(&rec, WM_OPERATION_RESTORE);
  CHECK_SEQ(&rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
            WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_PROGRESS, WM_STATUS_BACKUPRESTORE_END);
  CHECK_END(&rec, WM_S_OK, 5, 5, 0);
  check_store_holds(r2, lic, pick, NLIC + 1);

  /* Cancel with nothing running, after operations ran. */
  CHECK_HR(wm_backup_restorer_cancel_backup(r), WM_S_FALSE);
  CHECK_HR(wm_backup_restorer_cancel_restore(r), WM_S_FALSE);

  /* Busy: a large backup runs; a second start of either kind is refused by the call. */
  {
    const unsigned total = getenv("WMLICENSE_TEST_QUICK") ? 5000u : 50000u;
    const unsigned batch = 5000u;
    wm_license_store *s = NULL;
    wm_license *many = (wm_license *)calloc(batch, sizeof *many);
    char (*kids)[32] = (char (*)[32])calloc(batch, 32);
    uint8_t (*keys)[16] = (uint8_t (*)[16])calloc(batch, 16);
    unsigned base, i;
    uint64_t count = 0;
    CHECK(many && kids && keys);
    double t0 = wmr_now_ms();
    REQUIRE_OK(wm_license_store_open(big, &s));
    for (base = 0; base < total; base += batch) {
      for (i = 0; i < batch; i++)
        wmt_make_license(&many[i], base + i, kids[i], keys[i], WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP);
      REQUIRE_OK(wm_license_store_put_many(s, many, batch));
    }
    CHECK_HR(wm_license_store_count(s, &count), WM_S_OK);
    CHECK(count == total);
    wm_license_store_close(s);
    printf("put_many of %u licenses: %.0f ms\n", total, wmr_now_ms() - t0);
    free(many);
    free(kids);
    free(keys);

    CHECK_HR(wmr_set_str(r, WM_PROP_STORE_PATH, big), WM_S_OK);
    CHECK_HR(wmr_set_str(r, WM_PROP_BACKUP_PATH, bigbak), WM_S_OK);
    CHECK_HR(wmr_set_str(r, WM_PROP_RESTORE_PATH, bdir), WM_S_OK);
    wmr_clear(&rec);
    CHECK_HR(wm_backup_restorer_backup(r, 0), WM_S_OK);
    CHECK_HR(wm_backup_restorer_backup(r, 0), WM_E_BACKUPRESTORE_BUSY);
    CHECK_HR(wm_backup_restorer_backup(r, WM_BACKUP_OVERWRITE), WM_E_BACKUPRESTORE_BUSY);
    CHECK_HR(wm_backup_restorer_restore(r, 0), WM_E_BACKUPRESTORE_BUSY);
    CHECK_HR(wm_backup_restorer_restore(r, WM_RESTORE_INDIVIDUALIZE), WM_E_BACKUPRESTORE_BUSY);
    CHECK_HR(wm_backup_restorer_cancel_restore(r), WM_S_FALSE); /* a backup runs, not a restore */
    CHECK_HR(wm_backup_restorer_wait(r, WM_INFINITE), WM_S_OK);
    CHECK_EVENTS(&rec, WM_OPERATION_BACKUP);
    CHECK(wmr_count_status(&rec, WM_STATUS_BACKUPRESTORE_END) == 1);
    CHECK(wmr_count_status(&rec, WM_STATUS_BACKUPRESTORE_BEGIN) == 1);
    CHECK(wmr_count_status(&rec, WM_STATUS_RESTRICTED_LICENSE) == 0);
    CHECK(wmr_count_status(&rec, WM_STATUS_BACKUPRESTORE_PROGRESS) >= 1);
    CHECK_END(&rec, WM_S_OK, total, total, 0);
    {
      /* PROGRESS: counters consistent and never decreasing, the last one right before END
         with the final counts, and at most one every 100 ms apart from that last one. */
      size_t k, nprog = wmr_count_status(&rec, WM_STATUS_BACKUPRESTORE_PROGRESS);
      size_t seen = 0;
      uint64_t prev = 0;
      double prev_at = 0;
      int monotonic = 1, totals = 1, spaced = 1;
      const wmr_event *before_end = rec.n >= 2 ? wmr_at(&rec, rec.n - 2) : NULL;
      CHECK(before_end != NULL && before_end->status == WM_STATUS_BACKUPRESTORE_PROGRESS &&
            before_end->processed == total && before_end->total == total);
      for (k = 0; k < rec.n; k++) {
        const wmr_event *e = wmr_at(&rec, k);
        if (e->status != WM_STATUS_BACKUPRESTORE_PROGRESS) continue;
        seen++;
        if (e->processed < prev || e->processed > total) monotonic = 0;
        if (e->total != total) totals = 0;
        if (seen > 1 && seen < nprog && e->at_ms - prev_at < 99.0) {
          fprintf(stderr, "PROGRESS %zu came %.1f ms after the previous one\n", seen, e->at_ms - prev_at);
          spaced = 0;
        }
        prev = e->processed;
        prev_at = e->at_ms;
      }
      CHECK(monotonic);
      CHECK(totals);
      CHECK(spaced);
      printf("backup of %u licenses: %.0f ms, %zu PROGRESS events\n", total,
             wmr_last(&rec)->at_ms - wmr_at(&rec, 0)->at_ms, nprog);
    }
    CHECK(wmr_settle(r, &rec) == rec.n); /* nothing more after END */
    CHECK_HR(wm_backup_restorer_cancel_backup(r), WM_S_FALSE);
  }

  wm_backup_restorer_destroy(r);
  wmr_free(&rec);
  free(first);
  free(again);
  free(second);
  wmt_rm_rf(home);
  return wmt_finish("test_backup_restore");
}
