/**
 * Where things are: the project's root and its tests directory (for fixtures).
 *
 * @module
 */

/** The project's root directory, with a trailing slash. */
export const ROOT: string = new URL("../../", import.meta.url).pathname;

/** The tests directory, with a trailing slash: fixtures are under `${TESTS_DIR}fixtures/`. */
export const TESTS_DIR: string = new URL("../", import.meta.url).pathname;
