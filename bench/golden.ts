// Where the benchmarks read the golden configs (the SD-1.5 structure they put SD's widths back into):
// ../shared/golden beside the checkout, or SILO_GOLDEN (the prepared GPU run carries the few configs
// it needs, since ../shared does not travel to the device machine).
export const GOLDEN = process.env['SILO_GOLDEN'] || new URL('../../shared/golden', import.meta.url).pathname;
