# Cohort statistics per ICD-10 category over admissions from any number of hospitals,
# harmonising their schemas first: the R twin of examples/cohort-stats-rust (same numbers).
# Owners approve this exact script; its settings are these two lines.
group_by <- "diagnosis" # or "sex", "age_band"
min_group <- 10L

category <- function(code) toupper(substr(gsub(".", "", trimws(code), fixed = TRUE), 1L, 3L))

# Site A: age, sex (M/F), diagnosis (I21), admit_date, discharge_date, died (0/1).
site_a <- function(t) {
  t <- t[complete.cases(t[c("age", "sex", "diagnosis", "admit_date", "discharge_date", "died")]), ]
  data.frame(
    age = as.numeric(t$age),
    sex = ifelse(toupper(t$sex) == "F", "F", "M"),
    diagnosis = category(t$diagnosis),
    los_days = as.numeric(as.Date(t$discharge_date) - as.Date(t$admit_date)),
    died = t$died != 0
  )
}

# Site B: birth_year, admit_year, gender, dx_code (i21.4), los_days, outcome.
site_b <- function(t) {
  t <- t[complete.cases(t[c("birth_year", "admit_year", "gender", "dx_code", "los_days", "outcome")]), ]
  data.frame(
    age = as.numeric(t$admit_year - t$birth_year),
    sex = ifelse(tolower(t$gender) == "female", "F", "M"),
    diagnosis = category(t$dx_code),
    los_days = as.numeric(t$los_days),
    died = tolower(t$outcome) == "deceased"
  )
}

harmonise <- function(name) {
  t <- cleanroom::table(name)
  if (all(c("diagnosis", "admit_date") %in% names(t))) return(site_a(t))
  if (all(c("dx_code", "birth_year") %in% names(t))) return(site_b(t))
  stop(sprintf("table %s: unrecognised layout", name))
}

tables <- cleanroom::tables()
admissions <- do.call(rbind, lapply(tables, function(name) {
  a <- harmonise(name)
  cleanroom::log(name, ": ", nrow(a), " admissions")
  a
}))
admissions$age_band <- sprintf("%d-%d", admissions$age %/% 10 * 10, admissions$age %/% 10 * 10 + 9)

groups <- split(admissions, admissions[[group_by]])
groups <- groups[order(names(groups))]
sizes <- vapply(groups, nrow, 0L)
kept <- groups[sizes >= min_group]
stats <- data.frame(
  group = names(kept),
  patients = vapply(kept, nrow, 0L),
  mean_age = vapply(kept, function(g) mean(g$age), 0),
  mean_los_days = vapply(kept, function(g) mean(g$los_days), 0),
  mortality_pct = vapply(kept, function(g) 100 * mean(g$died), 0)
)
cleanroom::publish_table("cohort_stats", stats, counts = "patients")
cleanroom::publish_json("summary", list(
  tables = as.list(tables),
  admissions = nrow(admissions),
  group_by = group_by,
  groups_released = nrow(stats),
  groups_suppressed = sum(sizes < min_group),
  min_group = min_group
))
