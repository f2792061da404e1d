import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';

/**
 * What a server's data dir holds after a crash, checked from outside the server: the SQLite
 * file (`PRAGMA integrity_check`, `PRAGMA foreign_key_check`) and the blob store's files
 * (src/blobs/fs-blob-store.ts: `blobs/sha256/<first two hex digits>/<sha256>`, each hashing to
 * its name). Returns the problems found (none: an empty list) and what was looked at.
 */
export interface IntegrityReport {
  problems: string[];
  blobFiles: number;
  /** Uploads cut off by a crash, left in blobs/tmp (the server sweeps them an hour later). */
  tmpFiles: number;
  /** The digests of every blob file. */
  digests: Set<string>;
}

export function checkDataDir(dataDir: string): IntegrityReport {
  const problems: string[] = [];
  const db = openReadOnly(dataDir);
  try {
    const integrity = db.pragma('integrity_check') as Array<{ integrity_check: string }>;
    if (integrity.length !== 1 || integrity[0]!.integrity_check !== 'ok') {
      problems.push(`PRAGMA integrity_check: ${integrity.map((r) => r.integrity_check).join('; ').slice(0, 1000)}`);
    }
    const fk = db.pragma('foreign_key_check') as unknown[];
    if (fk.length > 0) problems.push(`PRAGMA foreign_key_check: ${fk.length} rows, e.g. ${JSON.stringify(fk.slice(0, 5))}`);
  } finally {
    db.close();
  }
  const blobs = checkBlobFiles(dataDir);
  return { ...blobs, problems: [...problems, ...blobs.problems] };
}

/** The blob store's files alone (a server whose database is elsewhere: PostgreSQL). */
export function checkBlobFiles(dataDir: string): IntegrityReport {
  const problems: string[] = [];
  const digests = new Set<string>();
  const root = join(dataDir, 'blobs', 'sha256');
  let blobFiles = 0;
  if (existsSync(root)) {
    for (const prefix of readdirSync(root)) {
      for (const name of readdirSync(join(root, prefix))) {
        blobFiles++;
        const actual = createHash('sha256').update(readFileSync(join(root, prefix, name))).digest('hex');
        if (actual !== name || name.slice(0, 2) !== prefix) problems.push(`blob file sha256/${prefix}/${name} hashes to ${actual}`);
        else digests.add(name);
      }
    }
  }
  const tmp = join(dataDir, 'blobs', 'tmp');
  const tmpFiles = existsSync(tmp) ? readdirSync(tmp).length : 0;
  return { problems, blobFiles, tmpFiles, digests };
}

/** The data dir's SQLite file, read-only (a WAL left by a crash is read, not checkpointed). */
export function openReadOnly(dataDir: string): Database.Database {
  return new Database(join(dataDir, 'boxgrid.db'), { readonly: true, fileMustExist: true });
}
