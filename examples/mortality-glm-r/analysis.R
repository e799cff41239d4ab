# In-hospital mortality across both hospitals: a logistic regression of death on age, sex and
# ICD-10 chapter, on the two sites' admissions harmonised to one layout. Releases the
# coefficient table (estimates, standard errors, odds ratios, p-values) and the model's size.
a <- cleanroom::table("st_marys")
b <- cleanroom::table("northfield")
chapter <- function(code) toupper(substr(trimws(code), 1L, 1L))
pooled <- rbind(
  data.frame(site = "st_marys", age = as.numeric(a$age), female = toupper(a$sex) == "F",
             chapter = chapter(a$diagnosis), died = a$died != 0),
  data.frame(site = "northfield", age = as.numeric(b$admit_year - b$birth_year),
             female = tolower(b$gender) == "female", chapter = chapter(b$dx_code),
             died = tolower(b$outcome) == "deceased")
)
pooled <- pooled[complete.cases(pooled), ]
fit <- glm(died ~ age + female + chapter + site, family = binomial, data = pooled)
s <- summary(fit)$coefficients
cleanroom::publish_table("coefficients", data.frame(
  term = rownames(s),
  estimate = s[, "Estimate"],
  std_error = s[, "Std. Error"],
  odds_ratio = exp(s[, "Estimate"]),
  p_value = s[, "Pr(>|z|)"]
))
cleanroom::publish_json("model", list(
  formula = deparse(formula(fit)),
  admissions = nrow(pooled),
  residual_df = df.residual(fit),
  aic = AIC(fit)
))
cleanroom::log("fitted on ", nrow(pooled), " admissions; residual df ", df.residual(fit))
