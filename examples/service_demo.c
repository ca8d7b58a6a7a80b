/* wmlicense network service demo: one "machine" per call, each a directory with its own license
   store (MACHINE/store) and data directory (MACHINE/data), sharing nothing with the others but the
   backup file. scripts/demo-service.sh drives it against a running wmlicense-service:

     service_demo put     MACHINE                 put four licenses (one without the backup right)
     service_demo backup  URL MACHINE BACKUP_DIR  back MACHINE's store up, sealed to the service
     service_demo restore URL MACHINE BACKUP_DIR  restore into MACHINE (a new store is created)
     service_demo check   URL MACHINE BACKUP_DIR  the same with WM_RESTORE_VERIFY_ONLY: how many
                                                  computers are used, without using one
     service_demo release URL MACHINE             give MACHINE's computer back (its licenses of
                                                  the backup's lineages are removed)
     service_demo reset   URL BACKUP_DIR          free every computer of the backup's lineage

   Every event is printed as it arrives. Exit status: 0 when END succeeded, 1 when it failed,
   2 on bad usage. */
#include "wmlicense.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *status_name(wm_status s) {
  switch (s) {
    case WM_STATUS_BACKUPRESTORE_BEGIN: return "BEGIN";
    case WM_STATUS_BACKUPRESTORE_END: return "END";
    case WM_STATUS_BACKUPRESTORE_CONNECTING: return "CONNECTING";
    case WM_STATUS_BACKUPRESTORE_DISCONNECTING: return "DISCONNECTING";
    case WM_STATUS_ERROR_WITHURL: return "ERROR_WITHURL";
    case WM_STATUS_RESTRICTED_LICENSE: return "RESTRICTED_LICENSE";
    case WM_STATUS_BACKUPRESTORE_PROGRESS: return "PROGRESS";
    default: return "ERROR";
  }
}

static const char *op_name(wm_operation op) {
  switch (op) {
    case WM_OPERATION_BACKUP: return "backup ";
    case WM_OPERATION_RESTORE: return "restore";
    default: return "release";
  }
}

/* What the END event said (copied: the event is valid only during the callback). */
typedef struct {
  wm_hresult hr;
  uint32_t devices_used, device_limit;
  char url[512];
} outcome;

/* Runs on a library worker thread, one event at a time. */
static void on_event(const wm_event *e, void *context) {
  outcome *o = (outcome *)context;
  printf("  [%s] %-18s", op_name(e->operation), status_name(e->status));
  switch (e->status) {
    case WM_STATUS_RESTRICTED_LICENSE:
      printf(" %.*s \"%s\" has no backup right: left out", (int)e->key_id_len, (const char *)e->key_id,
             e->title ? e->title : "");
      break;
    case WM_STATUS_BACKUPRESTORE_PROGRESS:
      printf(" %llu of %llu", (unsigned long long)e->processed, (unsigned long long)e->total);
      break;
    case WM_STATUS_ERROR_WITHURL:
      printf(" 0x%08x, help: %s", (unsigned)e->hr, e->message ? e->message : "");
      snprintf(o->url, sizeof o->url, "%s", e->message ? e->message : "");
      break;
    case WM_STATUS_BACKUPRESTORE_END:
      o->hr = e->hr;
      o->devices_used = e->devices_used;
      o->device_limit = e->device_limit;
      printf(" 0x%08x %s processed %llu, total %llu, skipped %llu", (unsigned)e->hr,
             WM_SUCCEEDED(e->hr) ? "ok:" : "FAILED:", (unsigned long long)e->processed,
             (unsigned long long)e->total, (unsigned long long)e->skipped);
      if (e->message) printf("\n      %s", e->message);
      break;
    default:
      break;
  }
  printf("\n");
  fflush(stdout);
}

static int fail(const char *what, wm_hresult hr) {
  fprintf(stderr, "%s failed: 0x%08x %s\n  %s\n", what, (unsigned)hr, wm_hresult_message(hr),
          wm_last_error_message());
  return 1;
}

#define TRY(call)                                \
  do {                                           \
    wm_hresult hr_ = (call);                     \
    if (WM_FAILED(hr_)) return fail(#call, hr_); \
  } while (0)

static wm_hresult set(wm_backup_restorer *r, const char *name, const char *value) {
  return wm_backup_restorer_set_prop(r, name, WM_TYPE_STRING, (const uint8_t *)value, (uint32_t)strlen(value));
}

static int32_t count_one(const wm_license *l, void *ctx) {
  (void)l;
  (*(unsigned *)ctx)++;
  return 0;
}

static unsigned licenses_in(const char *store_path) {
  wm_license_store *s = NULL;
  unsigned n = 0;
  if (wm_license_store_open(store_path, &s) != WM_S_OK) return 0;
  wm_license_store_for_each(s, count_one, &n);
  wm_license_store_close(s);
  return n;
}

static int put(const char *store_path) {
  static const struct { const char *kid, *key, *title; uint32_t rights; } songs[] = {
    {"kid-blue-in-green", "content-key-0001", "Blue in Green", WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP},
    {"kid-so-what", "content-key-0002", "So What", WM_RIGHT_PLAYBACK | WM_RIGHT_COPY_TO_CD | WM_RIGHT_BACKUP},
    {"kid-freddie", "content-key-0003", "Freddie Freeloader", WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP},
    {"kid-all-blues", "content-key-0004", "All Blues", WM_RIGHT_PLAYBACK},
  };
  wm_license_store *store = NULL;
  size_t i;
  TRY(wm_license_store_open(store_path, &store));
  for (i = 0; i < sizeof songs / sizeof songs[0]; i++) {
    wm_license l;
    memset(&l, 0, sizeof l);
    l.key_id = (const uint8_t *)songs[i].kid;
    l.key_id_len = strlen(songs[i].kid);
    l.content_key = (const uint8_t *)songs[i].key;
    l.content_key_len = strlen(songs[i].key);
    l.title = songs[i].title;
    l.rights = songs[i].rights;
    l.play_count = -1;
    l.issued_at = 1700000000;
    TRY(wm_license_store_put(store, &l));
  }
  wm_license_store_close(store);
  printf("  %s holds %u licenses\n", store_path, licenses_in(store_path));
  return 0;
}

static void usage(void) {
  fprintf(stderr,
          "usage: service_demo put MACHINE\n"
          "       service_demo backup|restore|check URL MACHINE BACKUP_DIR\n"
          "       service_demo release URL MACHINE\n"
          "       service_demo reset URL BACKUP_DIR\n");
}

int main(int argc, char **argv) {
  const char *cmd = argc > 1 ? argv[1] : "";
  char store[1024], data[1024];
  outcome o;
  wm_backup_restorer *r = NULL;
  const char *url, *machine = NULL;
  int is_reset = strcmp(cmd, "reset") == 0;

  memset(&o, 0, sizeof o);
  if (strcmp(cmd, "put") == 0 && argc == 3) {
    snprintf(store, sizeof store, "%s/store", argv[2]);
    return put(store);
  }
  if (!((strcmp(cmd, "backup") == 0 || strcmp(cmd, "restore") == 0 || strcmp(cmd, "check") == 0) && argc == 5) &&
      !(strcmp(cmd, "release") == 0 && argc == 4) && !(is_reset && argc == 4)) {
    usage();
    return 2;
  }
  url = argv[2];
  if (!is_reset) machine = argv[3];

  TRY(wm_backup_restorer_create(on_event, &o, &r));
  TRY(set(r, WM_PROP_SERVICE_URL, url));
  if (machine) {
    snprintf(store, sizeof store, "%s/store", machine);
    snprintf(data, sizeof data, "%s/data", machine);
    TRY(set(r, WM_PROP_STORE_PATH, store));
    TRY(set(r, WM_PROP_DATA_PATH, data));
  }
  if (strcmp(cmd, "backup") == 0) {
    TRY(set(r, WM_PROP_BACKUP_PATH, argv[4]));
    TRY(wm_backup_restorer_backup(r, WM_BACKUP_OVERWRITE));
  } else if (strcmp(cmd, "restore") == 0 || strcmp(cmd, "check") == 0) {
    uint32_t flags = WM_RESTORE_INDIVIDUALIZE;
    if (strcmp(cmd, "check") == 0) flags |= WM_RESTORE_VERIFY_ONLY;
    TRY(set(r, WM_PROP_RESTORE_PATH, argv[4]));
    TRY(wm_backup_restorer_restore(r, flags));
  } else if (strcmp(cmd, "release") == 0) {
    TRY(wm_backup_restorer_release(r, 0));
  } else {
    TRY(set(r, WM_PROP_RESTORE_PATH, argv[3]));
    TRY(wm_backup_restorer_release(r, WM_RELEASE_ALL_DEVICES));
  }
  TRY(wm_backup_restorer_wait(r, WM_INFINITE));
  wm_backup_restorer_destroy(r);

  if (strcmp(cmd, "backup") != 0 && o.device_limit > 0) {
    printf("  => %u of %u computers used\n", o.devices_used, o.device_limit);
  }
  if (o.hr == WM_E_RESTORE_FRAUD) {
    printf("  => refused: this backup was already restored on %u of %u computers%s%s\n", o.devices_used,
           o.device_limit, o.url[0] ? "; help: " : "", o.url);
  }
  if (machine && WM_SUCCEEDED(o.hr) && strcmp(cmd, "backup") != 0 && strcmp(cmd, "check") != 0) {
    printf("  => %s now holds %u licenses\n", store, licenses_in(store));
  }
  return WM_SUCCEEDED(o.hr) ? 0 : 1;
}
