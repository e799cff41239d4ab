SELECT diagnosis, COUNT(*) AS patients, AVG(age) AS mean_age
FROM patients
GROUP BY diagnosis
HAVING COUNT(*) >= 5
ORDER BY diagnosis
