/**
 * The launcher's claim records, as a test sees them: the claims directory is every launcher's of
 * this user, so a test counts only the records that mention its own paths.
 *
 * @module
 */

import { claimsDirectory } from "../../app/path_claims.ts";

/** The text of each claim record that mentions any of `needles` (a record removed meanwhile is skipped). */
export function claimRecordsMentioning(...needles: string[]): string[] {
  const directory = claimsDirectory();
  const records: string[] = [];
  for (const entry of Deno.readDirSync(directory)) {
    let text: string;
    try {
      text = Deno.readTextFileSync(`${directory}/${entry.name}`);
    } catch {
      continue; // removed meanwhile by its launcher
    }
    if (needles.some((needle) => text.includes(needle))) records.push(text);
  }
  return records;
}
